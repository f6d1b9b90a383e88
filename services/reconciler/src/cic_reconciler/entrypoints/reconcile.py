"""The reconcile pass: take the inventory, diff it against our state, act, report."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from cic_common.bus import Publisher
from cic_common.events import LaunchRequested, NodeLost, TerminateRequested
from cic_common.lifecycle import NodeStatus

from cic_reconciler.domain.diff import (
    Graces,
    KnownNode,
    MarkLost,
    RetryLaunch,
    SeenCluster,
    TerminateOrphan,
    diff,
)

__all__ = ["PassReport", "Reconciler"]

log = logging.getLogger(__name__)


class Inventory(Protocol):
    async def clusters(self) -> list[SeenCluster]: ...


@dataclass
class PassReport:
    at: datetime
    clusters: int = 0
    orphans: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)


class Store(Protocol):
    async def nodes(self, ids: set[str]) -> list[KnownNode]: ...

    async def transition(
        self, node_id: str, target: NodeStatus, reason: str = "", **fields: object
    ) -> bool: ...

    async def launch_command(self, node_id: str) -> LaunchRequested | None: ...

    async def save_report(self, report: PassReport) -> None: ...


class Reconciler:
    """One pass compares the backends' inventory with our records and acts on the
    difference; each pass's report is stored. Without a complete inventory it does
    nothing: acting on a partial view would take down what it cannot see."""

    def __init__(
        self,
        inventory: Inventory,
        store: Store,
        bus: Publisher,
        graces: Graces,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._inventory = inventory
        self._store = store
        self._bus = bus
        self._graces = graces
        self._clock = clock
        self.last_report: PassReport | None = None

    async def due(self) -> list[datetime]:
        return [self._clock()]

    async def reconcile(self, now: datetime) -> None:
        """One pass. The inventory is taken before our state is read, so a node
        launched in between is seen in our state and never mistaken for an orphan."""
        clusters = await self._inventory.clusters()
        nodes = await self._store.nodes({c.node_id for c in clusters})
        report = PassReport(at=now, clusters=len(clusters))
        for decision in diff(nodes, clusters, now, self._graces):
            if isinstance(decision, TerminateOrphan):
                orphan = TerminateRequested(
                    node_id=decision.node_id, graceful=False, reason="orphan cluster"
                )
                await self._bus.publish(orphan, msg_id=f"orphan:{decision.cluster_name}")
                report.orphans.append(decision.cluster_name)
            elif isinstance(decision, MarkLost):
                if await self._store.transition(decision.node_id, NodeStatus.LOST,
                                                decision.reason):  # fmt: skip
                    lost = NodeLost(node_id=decision.node_id, reason=decision.reason)
                    await self._bus.publish(lost, msg_id=f"lost:{decision.node_id}")
                    report.lost.append(decision.node_id)
            elif isinstance(decision, RetryLaunch):
                command = await self._store.launch_command(decision.node_id)
                if command is not None:
                    stamp = int(now.timestamp())
                    await self._bus.publish(command, msg_id=f"launch:{command.node_id}:{stamp}")
                    report.retried.append(decision.node_id)
        self.last_report = report
        await self._store.save_report(report)
        if report.orphans or report.lost or report.retried:
            log.warning("reconciled", extra={"orphans": report.orphans, "lost": report.lost,
                                             "retried": report.retried})  # fmt: skip
