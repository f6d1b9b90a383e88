"""Scenario 1: under steady load, one replica is killed (SIGKILL, agent and engine) and
another hangs (SIGSTOP of its engine): no request fails, every stream ends whole, and the
platform replaces both with nothing left behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

import pytest
from chaos_harness import (
    FIGURES,
    SteadyLoad,
    deploy,
    engine_of,
    node_statuses,
    processes_of,
    serving_nodes,
)
from cic_common.bus import Bus
from conftest import Running
from support import eventually, published

pytestmark = pytest.mark.chaos

MODEL = "chaos-replicas"
TOKEN_DELAY = "0.02"
"""Seconds per token: streams of 24 tokens last half a second, so faults cut some."""


async def test_a_killed_and_a_hung_replica_fail_no_request_and_are_replaced(
    running: Running, bus: Bus
) -> None:
    deployed = await deploy(running, MODEL, replicas=3, engine_args=["--token-delay", TOKEN_DELAY])
    first = sorted(await node_statuses(deployed))
    killed, hung = first[0], first[1]
    hung_engine = engine_of(hung)
    load = SteadyLoad(deployed, workers=6)
    try:
        async with load.running():
            await asyncio.sleep(3)  # load under way before the faults
            for pid in processes_of(killed):
                os.kill(pid, signal.SIGKILL)
            os.kill(hung_engine, signal.SIGSTOP)
            # the load goes on until both are replaced: three active nodes besides them
            statuses = await eventually(
                lambda: serving_nodes(deployed, {killed, hung}, 3), within=240, every=0.5
            )
            await asyncio.sleep(2)  # and a little on the replacements
    finally:
        with contextlib.suppress(ProcessLookupError):  # gone once its node was replaced
            os.kill(hung_engine, signal.SIGCONT)
    assert statuses[killed] != "active"
    assert statuses[hung] != "active"
    assert not processes_of(killed)
    launches = await published(bus, "cic.launch-requested.>")
    scenario = load.scenario("replica SIGKILL + SIGSTOP under load", notes="3 replicas")
    scenario.launches, scenario.duplicate_launches = launches, max(0, launches - 5)
    FIGURES.record(scenario)
    assert load.errors == [], (load.errors[:3], load.errors[-3:])
    assert scenario.requests_sent
    assert scenario.streams_sent
    assert launches == 5  # three, then one replacement for each
