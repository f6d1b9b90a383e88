"""Scenario 6, as a local machine can stage it: a node's agent loses its link to the
control plane (its process frozen: no heartbeats) while its engine keeps serving and
answering health's polls. A short cut leaves the node routed (degraded, not unhealthy);
a cut past `dead_after` has it declared dead and replaced; when the link comes back,
nothing flaps back in. No request fails either way."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from functools import partial

import pytest
from chaos_harness import (
    FIGURES,
    Deployed,
    SteadyLoad,
    agents_of,
    deploy,
    node_statuses,
    processes_of,
    serving_nodes,
)
from cic_common.bus import Bus
from conftest import Running
from support import eventually, published

pytestmark = pytest.mark.chaos

MODEL = "chaos-network"
LATE_AFTER = 10.0
"""The local platform's ``CIC_LATE_AFTER``: heartbeats this late count as missing."""
DEAD_AFTER = 30.0
"""The local platform's ``CIC_DEAD_AFTER``."""


def agent_of(node_id: str) -> int:
    agents = agents_of(node_id)
    assert len(agents) == 1, f"{node_id}: {processes_of(node_id)}"
    return agents[0]


@contextlib.contextmanager
def cut_off(pid: int) -> Iterator[None]:
    """The agent ``pid`` unable to reach anyone (frozen) until the block ends."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):  # its node was terminated meanwhile
            os.kill(pid, signal.SIGCONT)


async def watch(deployed: Deployed, node_id: str, seconds: float) -> list[str]:
    """The node's status every half second for ``seconds``."""
    seen = []
    for _ in range(int(seconds / 0.5)):
        seen.append((await node_statuses(deployed)).get(node_id, "gone"))
        await asyncio.sleep(0.5)
    return seen


async def test_a_node_cut_off_from_the_control_plane_is_judged_by_the_matrix_and_never_flaps(
    running: Running, bus: Bus
) -> None:
    deployed = await deploy(running, MODEL, replicas=2, engine_args=["--token-delay", "0.01"])
    short, long = sorted(await node_statuses(deployed))
    load = SteadyLoad(deployed, workers=4)
    async with load.running():
        with cut_off(agent_of(short)):  # longer than late_after, shorter than dead_after
            during_short = await watch(deployed, short, LATE_AFTER + 6)
        after_short = await watch(deployed, short, 6)
        with cut_off(agent_of(long)):  # past dead_after: given up and replaced
            during_long = await watch(deployed, long, DEAD_AFTER + 20)
            await eventually(partial(serving_nodes, deployed, {long}, 2), within=120)
        after_long = await watch(deployed, long, 8)
    launches = await published(bus, "cic.launch-requested.>")
    scenario = load.scenario(
        "a node's agent cut off from the control plane, 16 s and 50 s",
        notes=f"short cut: {sorted(set(during_short + after_short))}; long cut: "
        f"{transitions(during_long + after_long)}",
    )
    scenario.launches, scenario.duplicate_launches = launches, max(0, launches - 3)
    FIGURES.record(scenario)
    assert load.errors == [], (load.errors[:3], load.errors[-3:])
    # short: heartbeats late but the engine answers: degraded, still routed, never out
    assert set(during_short + after_short) == {"active"}
    # long: silent for dead_after: dead, then terminated; never active again after that
    path = transitions(during_long + after_long)
    assert "dead" in path
    assert "active" not in path[path.index("dead") :]
    assert launches == 3  # two, then one replacement
    assert (await node_statuses(deployed))[long] in {"dead", "terminated"}


def transitions(seen: list[str]) -> list[str]:
    """``seen`` without repeats in a row."""
    return [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s]
