"""A reconcile pass on fakes: what it publishes, and that it does nothing when blind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cic_common.events import Event, LaunchRequested, NodeLost, NodeSpec, TerminateRequested
from cic_common.lifecycle import TRANSITIONS, NodeStatus
from cic_reconciler.adapters.sources import InventoryUnavailable
from cic_reconciler.domain.diff import Graces, KnownNode, SeenCluster
from cic_reconciler.entrypoints.reconcile import PassReport, Reconciler

NOW = datetime(2026, 1, 1, tzinfo=UTC)
HOUR_AGO = NOW - timedelta(hours=1)


class FakeInventory:
    def __init__(self, clusters: list[SeenCluster] | None) -> None:
        self.clusters_seen = clusters

    async def clusters(self) -> list[SeenCluster]:
        if self.clusters_seen is None:
            raise InventoryUnavailable("no provisioner answered")
        return self.clusters_seen


class FakeStore:
    def __init__(self, nodes: dict[str, str], requested_minutes_ago: float = 60 * 24) -> None:
        self.status = nodes
        self.requested = NOW - timedelta(minutes=requested_minutes_ago)
        self.reports: list[PassReport] = []

    async def nodes(self, ids: set[str]) -> list[KnownNode]:
        return [KnownNode(i, s, HOUR_AGO, self.requested) for i, s in self.status.items()]

    async def transition(
        self, node_id: str, target: NodeStatus, reason: str = "", **fields: object
    ) -> bool:
        if NodeStatus(self.status[node_id]) not in TRANSITIONS[target]:
            return False
        self.status[node_id] = target.value
        return True

    async def launch_command(self, node_id: str) -> LaunchRequested | None:
        if self.status.get(node_id) not in ("requested", "launching"):
            return None
        return LaunchRequested(node_id=node_id, deployment_id="d1", spec=NodeSpec(model="m"))

    async def save_report(self, report: PassReport) -> None:
        self.reports.append(report)


class FakeBus:
    def __init__(self) -> None:
        self.sent: list[Event] = []

    async def publish(self, event: Event, *, msg_id: str | None = None) -> str:
        self.sent.append(event)
        return "id"


def reconciler(inventory: FakeInventory, store: FakeStore, bus: FakeBus) -> Reconciler:
    graces = Graces(
        orphan=timedelta(minutes=10),
        ghost=timedelta(minutes=10),
        stuck_launch=timedelta(minutes=20),
        give_up_launch=timedelta(days=2),
    )
    return Reconciler(inventory, store, bus, graces)


async def test_ghosts_are_marked_lost_once_and_orphans_terminated() -> None:
    store = FakeStore({"nghost": "active", "nok": "active"})
    inventory = FakeInventory(
        [SeenCluster("cic-x-nok", "nok", HOUR_AGO), SeenCluster("cic-x-norph", "norph", HOUR_AGO)]
    )
    bus = FakeBus()
    passes = reconciler(inventory, store, bus)
    await passes.reconcile(NOW)
    await passes.reconcile(NOW)
    lost = [e for e in bus.sent if isinstance(e, NodeLost)]
    orphans = [e for e in bus.sent if isinstance(e, TerminateRequested)]
    assert [e.node_id for e in lost] == ["nghost"]
    assert store.status["nghost"] == "lost"
    assert {e.node_id for e in orphans} == {"norph"}
    assert all(not e.graceful for e in orphans)
    assert passes.last_report is not None
    assert passes.last_report.orphans == ["cic-x-norph"]
    assert [r.lost for r in store.reports] == [["nghost"], []]


async def test_a_stuck_launch_is_sent_again_under_a_new_message_id() -> None:
    store, bus = FakeStore({"nstuck": "launching"}, requested_minutes_ago=30), FakeBus()
    await reconciler(FakeInventory([]), store, bus).reconcile(NOW)
    resent = [e for e in bus.sent if isinstance(e, LaunchRequested)]
    assert [e.node_id for e in resent] == ["nstuck"]
    assert store.reports[0].retried == ["nstuck"]
    assert store.status["nstuck"] == "launching"


async def test_without_an_inventory_nothing_is_touched() -> None:
    store = FakeStore({"n1": "active"})
    bus = FakeBus()
    with pytest.raises(InventoryUnavailable):
        await reconciler(FakeInventory(None), store, bus).reconcile(NOW)
    assert bus.sent == []
    assert store.status == {"n1": "active"}
    assert store.reports == []
