"""The ``nodes`` table: guarded status transitions and the idempotency log of node events."""

from __future__ import annotations

from typing import Any

import asyncpg

from cic_common.events import Envelope
from cic_common.lifecycle import NodeStatus, allowed_from

__all__ = ["NodeRepository"]

_SETTABLE = frozenset(
    {"cluster_name", "endpoint", "launched_at", "ready_at", "terminated_at", "backend"}
)


class NodeRepository:
    """Writes node transitions; each service calls it only for the edges it owns."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, node_id: str) -> dict[str, Any] | None:
        row = await self._pool.fetchrow("SELECT * FROM nodes WHERE id = $1", node_id)
        return dict(row) if row else None

    async def node_secret(self, node_id: str) -> str | None:
        """The secret the node signs its events with; None for an unknown node."""
        secret: str | None = await self._pool.fetchval(
            "SELECT secret FROM nodes WHERE id = $1", node_id
        )
        return secret

    async def transition(
        self,
        node_id: str,
        target: NodeStatus,
        reason: str = "",
        conn: asyncpg.Connection | None = None,
        **fields: Any,
    ) -> bool:
        """Move ``node_id`` to ``target`` if the lifecycle allows it from where it is.

        Returns False (and changes nothing) when the node is missing or the edge is not
        allowed, which makes every caller idempotent: a repeat finds the node already there.
        ``fields`` may set ``endpoint``, ``cluster_name`` and the ``*_at`` timestamps
        (the value ``"now"`` means the database's clock).
        """
        unknown = set(fields) - _SETTABLE
        if unknown:
            raise ValueError(f"cannot set {sorted(unknown)} through a transition")
        sets = ["status = $2", "status_reason = $3", "updated_at = now()"]
        args: list[Any] = [node_id, target.value, reason, allowed_from(target)]
        for name, value in fields.items():
            if value == "now":
                sets.append(f"{name} = now()")
            else:
                args.append(value)
                sets.append(f"{name} = ${len(args)}")
        sql = f"UPDATE nodes SET {', '.join(sets)} WHERE id = $1 AND status = ANY($4::text[])"
        executor = conn or self._pool
        result: str = await executor.execute(sql, *args)
        return result.endswith(" 1")

    async def record_event(
        self, envelope: Envelope, node_id: str, conn: asyncpg.Connection | None = None
    ) -> bool:
        """Log a node event once; False when this event id was recorded before."""
        executor = conn or self._pool
        result: str = await executor.execute(
            "INSERT INTO node_events (event_id, node_id, type, occurred_at, payload)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING",
            envelope.event_id,
            node_id,
            envelope.type,
            envelope.occurred_at,
            envelope.data,
        )
        return result.endswith(" 1")
