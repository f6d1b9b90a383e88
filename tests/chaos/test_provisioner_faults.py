"""Scenario 4: the provisioner is killed (SIGKILL) in the middle of a launch, under load,
and started again: the launch completes once — one node, one agent — and after a
reconcile period no orphan and no ghost remains."""

from __future__ import annotations

import os
import signal
from functools import partial

import pytest
from chaos_harness import (
    FIGURES,
    Deployed,
    SteadyLoad,
    agents_of,
    deploy,
    node_statuses,
    spawns_of,
)  # fmt: skip
from cic_common.bus import Bus
from conftest import Running
from support import eventually, published

pytestmark = pytest.mark.chaos

MODEL = "chaos-provisioner"
LAUNCH_DELAY = 6.0
"""Seconds a local launch takes, as a cloud's does: the window the kill falls in."""


@pytest.fixture
def platform_env() -> dict[str, str]:
    return {"CIC_LOCAL_LAUNCH_DELAY": str(LAUNCH_DELAY)}


async def launching(deployed: Deployed, known: set[str]) -> str | None:
    """A node of the deployment being launched that is not one of ``known``."""
    statuses = await node_statuses(deployed)
    found = [n for n, s in statuses.items() if n not in known and s == "launching"]
    return found[0] if found else None


async def reconciled_clean(deployed: Deployed, after: int) -> dict[str, object] | None:
    """The first reconcile pass after the ``after`` ones seen, when it found no orphan."""
    reports = await _reports(deployed)
    if len(reports) <= after:
        return None
    return dict(reports[0])


async def test_a_provisioner_killed_mid_launch_launches_once_and_leaves_no_orphan(
    running: Running, bus: Bus
) -> None:
    deployed = await deploy(running, MODEL, replicas=1, engine_args=["--token-delay", "0.01"])
    first = set(await node_statuses(deployed))
    load = SteadyLoad(deployed, workers=4)
    async with load.running():
        scaled = await running.admin.patch(
            f"/admin/deployments/{deployed.deployment_id}", json={"replicas": 2}
        )
        assert scaled.status_code == 200, scaled.text
        node = await eventually(partial(launching, deployed, first), within=60, every=0.05)
        assert node is not None
        pid = running.platform.pid("provisioner")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # mid-launch: the node's agent is not started yet
        await eventually(partial(_stopped, running))
        assert not agents_of(node)
        running.platform.start()  # a new provisioner, as an orchestrator would start
        statuses = await eventually(
            lambda: _with_active(deployed, {*first, node}), within=180, every=0.5
        )
        assert statuses is not None
        seen = len(await _reports(deployed))
        report = await eventually(partial(reconciled_clean, deployed, seen), within=60)
        assert report is not None
    requested = await published(bus, "cic.launch-requested.>")
    resent = [n for r in await _reports(deployed) for n in _names(r.get("retried"))]
    spawns = spawns_of(running.platform, node)
    scenario = load.scenario(
        "provisioner SIGKILLed mid-launch, under load",
        notes=f"launch-requested {requested} times, {resent.count(node)} of them a resend",
    )
    orphans = _names(report.get("orphans"))
    scenario.launches, scenario.duplicate_launches = 2, spawns - 1
    scenario.orphans = len(orphans)
    FIGURES.record(scenario)
    assert load.errors == [], (load.errors[:3], load.errors[-3:])
    assert statuses[node] == "active"
    assert spawns == 1  # one agent started for it, however often it was asked
    assert len(agents_of(node)) == 1
    assert resent.count(node) <= 1  # resent by the reconciler at most once
    assert requested == 2 + resent.count(node)
    assert orphans == []
    assert _names(report.get("lost")) == []


async def _with_active(deployed: Deployed, nodes: set[str]) -> dict[str, str] | None:
    statuses = await node_statuses(deployed)
    return statuses if all(statuses.get(n) == "active" for n in nodes) else None


async def _stopped(running: Running) -> bool:
    return running.platform.pid("provisioner") is None


async def _reports(deployed: Deployed) -> list[dict[str, object]]:
    """The reconciler's passes so far, the latest first."""
    answer = await deployed.running.admin.get("/admin/reconcile/reports", params={"limit": 500})
    reports: list[dict[str, object]] = answer.json()["data"]
    return reports


def _names(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []
