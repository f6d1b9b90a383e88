"""What the reconciler compares: node rows in PostgreSQL and the provisioner's inventory."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg
from cic_common.events import LaunchRequested, NodeSpec
from cic_common.nodes import NodeRepository
from cic_common.streams import INVENTORY_SUBJECT
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from cic_reconciler.domain.diff import KnownNode, SeenCluster

if TYPE_CHECKING:
    from cic_reconciler.entrypoints.reconcile import PassReport

__all__ = ["InventoryUnavailable", "NatsInventory", "ReconcilerStore"]


class InventoryUnavailable(Exception):
    """No complete inventory: a pass must not act on a partial view of the world."""


class NatsInventory:
    """Asks the provisioner (request/reply on ``cic.inventory.request``)."""

    def __init__(self, nc: Client, timeout: float) -> None:
        self._nc = nc
        self._timeout = timeout

    async def clusters(self) -> list[SeenCluster]:
        try:
            reply = await self._nc.request(INVENTORY_SUBJECT, b"{}", timeout=self._timeout)
        except (NatsTimeout, NoRespondersError) as exc:
            raise InventoryUnavailable(f"no inventory: {type(exc).__name__}") from exc
        body = json.loads(reply.data)
        if not body.get("complete", False):
            raise InventoryUnavailable("the provisioner reported a partial inventory")
        return [
            SeenCluster(
                name=c["name"],
                node_id=c["node_id"],
                launched_at=datetime.fromisoformat(c["launched_at"]),
            )
            for c in body["clusters"]
        ]


class ReconcilerStore(NodeRepository):
    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self._pool = pool

    async def nodes(self, ids: set[str]) -> list[KnownNode]:
        """Every node not known to be gone, plus the given ids whatever their status."""
        rows = await self._pool.fetch(
            "SELECT id, status, launched_at, requested_at FROM nodes"
            " WHERE status NOT IN ('terminated', 'launch_failed', 'lost') OR id = ANY($1)",
            sorted(ids),
        )
        return [KnownNode(r["id"], r["status"], r["launched_at"], r["requested_at"]) for r in rows]

    async def launch_command(self, node_id: str) -> LaunchRequested | None:
        """The launch command of a node still waiting for one, as the scheduler sent it."""
        row = await self._pool.fetchrow(
            "SELECT id, deployment_id, generation, spec FROM nodes"
            " WHERE id = $1 AND status IN ('requested', 'launching')",
            node_id,
        )
        if row is None:
            return None
        return LaunchRequested(node_id=row["id"], deployment_id=row["deployment_id"],
                               generation=row["generation"],
                               spec=NodeSpec.model_validate(row["spec"]))  # fmt: skip

    async def save_report(self, report: PassReport) -> None:
        await self._pool.execute(
            "INSERT INTO reconcile_reports (at, clusters, orphans, lost, retried)"
            " VALUES ($1, $2, $3, $4, $5)",
            report.at,
            report.clusters,
            report.orphans,
            report.lost,
            report.retried,
        )
