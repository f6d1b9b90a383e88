"""Scenario 2: spot preemption notices from the cloud's metadata service, with two minutes
and with thirty seconds of lead, under steady load: the warned node's agent sees the
notice through the real AWS watcher, it leaves the routing, its replacement serves, and
no request fails, even when the machine is stopped at its deadline."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from functools import partial

import httpx
import pytest
from chaos_harness import (
    FIGURES,
    Deployed,
    SteadyLoad,
    deploy,
    node_statuses,
    processes_of,
    serving_nodes,
)
from cic_common.bus import Bus
from cic_local.metadata_server import Machines
from conftest import Running
from support import eventually, published, serving

pytestmark = pytest.mark.chaos

MODEL = "chaos-spot"
LEADS = (120, 30)
"""Seconds from each notice to its machine's stop."""


@pytest.fixture
async def metadata() -> AsyncIterator[str]:
    """A metadata service for every local machine: its base URL."""
    async with serving(Machines()) as url:
        yield url


@pytest.fixture
def platform_env(metadata: str) -> dict[str, str]:
    """Local nodes watch for AWS spot notices, each at an address of its own."""
    node_env = {
        "CIC_CLOUD": "aws",
        "CIC_METADATA_URL": f"{metadata}/vm/{{node_id}}",
        "CIC_PREEMPTION_POLL_INTERVAL": "0.5",
    }
    return {"CIC_NODE_ENV": json.dumps(node_env)}


async def status_of(deployed: Deployed, node_id: str, wanted: set[str]) -> bool:
    return (await node_statuses(deployed)).get(node_id) in wanted


async def test_spot_notices_of_two_minutes_and_of_thirty_seconds_fail_no_request(
    running: Running, bus: Bus, metadata: str
) -> None:
    deployed = await deploy(running, MODEL, replicas=3, engine_args=["--token-delay", "0.02"])
    load = SteadyLoad(deployed)
    reactions: list[str] = []
    warned: list[str] = []
    async with load.running(), httpx.AsyncClient(base_url=metadata) as cloud:
        await asyncio.sleep(2)  # load under way before the first notice
        for lead in LEADS:
            statuses = await node_statuses(deployed)
            victim = sorted(n for n, status in statuses.items() if status == "active")[0]
            warned.append(victim)
            sent = time.monotonic()
            notice = await cloud.post(f"/vm/{victim}/_control/notice", json={"in_seconds": lead})
            assert notice.status_code == 200, notice.text
            await eventually(partial(status_of, deployed, victim, {"draining", "terminated"}))
            out = time.monotonic() - sent
            await eventually(partial(serving_nodes, deployed, set(warned), 3), within=120)
            replaced = time.monotonic() - sent
            reactions.append(
                f"{lead} s notice: out of routing {out:.1f} s, replaced {replaced:.1f} s"
            )
            if lead < 60:  # the cloud stops the machine at its deadline, whatever is left
                await asyncio.sleep(max(0.0, lead - (time.monotonic() - sent)))
                for pid in processes_of(victim):
                    os.kill(pid, signal.SIGKILL)
                await asyncio.sleep(3)  # and the load goes on past the stop
    launches = await published(bus, "cic.launch-requested.>")
    warnings = await published(bus, "cic.termination-warning.>")
    scenario = load.scenario("spot notices, 120 s and 30 s of lead", notes="; ".join(reactions))
    scenario.launches, scenario.duplicate_launches = launches, max(0, launches - 5)
    FIGURES.record(scenario)
    assert load.errors == [], (load.errors[:3], load.errors[-3:])
    assert scenario.requests_sent
    assert scenario.streams_sent
    assert warnings >= len(LEADS)  # from the agents' own watchers, signed
    assert launches == 3 + len(LEADS)  # one replacement per notice, none twice
    final = await node_statuses(deployed)
    assert all(final[n] != "active" for n in warned)
