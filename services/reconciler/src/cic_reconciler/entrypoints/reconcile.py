"""The reconcile pass: take the inventory, diff it against our state, act."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from cic_common.bus import Publisher
from cic_common.events import NodeLost, TerminateRequested
from cic_common.lifecycle import NodeStatus

from cic_reconciler.domain.diff import KnownNode, MarkLost, SeenCluster, TerminateOrphan, diff

__all__ = ["PassReport", "Reconciler"]

log = logging.getLogger(__name__)


class Inventory(Protocol):
    async def clusters(self) -> list[SeenCluster]: ...


class Store(Protocol):
    async def nodes(self, ids: set[str]) -> list[KnownNode]: ...

    async def transition(
        self, node_id: str, target: NodeStatus, reason: str = "", **fields: object
    ) -> bool: ...


@dataclass
class PassReport:
    at: datetime
    clusters: int = 0
    orphans: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)


class Reconciler:
    def __init__(
        self,
        inventory: Inventory,
        store: Store,
        bus: Publisher,
        *,
        orphan_grace: timedelta,
        ghost_grace: timedelta,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._inventory = inventory
        self._store = store
        self._bus = bus
        self._orphan_grace = orphan_grace
        self._ghost_grace = ghost_grace
        self._clock = clock
        self.last_report: PassReport | None = None

    async def due(self) -> list[datetime]:
        return [self._clock()]

    async def reconcile(self, now: datetime) -> None:
        """One pass. The inventory is taken before our state is read, so a node
        launched in between is seen in our state and never mistaken for an orphan."""
        clusters = await self._inventory.clusters()
        nodes = await self._store.nodes({c.node_id for c in clusters})
        decisions = diff(
            nodes, clusters, now, orphan_grace=self._orphan_grace, ghost_grace=self._ghost_grace
        )
        report = PassReport(at=now, clusters=len(clusters))
        for decision in decisions:
            if isinstance(decision, TerminateOrphan):
                orphan = TerminateRequested(
                    node_id=decision.node_id, graceful=False, reason="orphan cluster"
                )
                await self._bus.publish(orphan, msg_id=f"orphan:{decision.cluster_name}")
                report.orphans.append(decision.cluster_name)
            elif isinstance(decision, MarkLost):
                reason = "cluster missing at its backend"
                if await self._store.transition(decision.node_id, NodeStatus.LOST, reason):
                    lost = NodeLost(node_id=decision.node_id, reason=reason)
                    await self._bus.publish(lost, msg_id=f"lost:{decision.node_id}")
                    report.lost.append(decision.node_id)
        self.last_report = report
        if report.orphans or report.lost:
            log.warning("reconciled", extra={"orphans": report.orphans, "lost": report.lost})
