"""Where health reads its facts: node rows in PostgreSQL, last heartbeats in Redis."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from cic_common.events import Heartbeat
from cic_common.nodes import NodeRepository
from redis.asyncio import Redis

__all__ = ["HealthStore", "HeartbeatRecord", "HeartbeatStore", "WatchedNode", "forget_fields"]

_HEARTBEATS = "cic:heartbeats"
_WATCHED = ("active", "unhealthy", "draining")


@dataclass(frozen=True)
class WatchedNode:
    id: str
    deployment_id: str
    model: str
    status: str
    endpoint: str | None
    ready_at: datetime | None
    status_since: datetime


@dataclass(frozen=True)
class HeartbeatRecord:
    received_at: datetime
    beat: Heartbeat


class HealthStore(NodeRepository):
    """Node transitions health owns, and the nodes it watches."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self._pool = pool

    async def watched(self) -> list[WatchedNode]:
        rows = await self._pool.fetch(
            "SELECT id, deployment_id, spec->>'model' AS model, status, endpoint, ready_at,"
            " updated_at FROM nodes WHERE status = ANY($1::text[]) ORDER BY id",
            list(_WATCHED),
        )
        return [
            WatchedNode(
                id=r["id"],
                deployment_id=r["deployment_id"],
                model=r["model"],
                status=r["status"],
                endpoint=r["endpoint"],
                ready_at=r["ready_at"],
                status_since=r["updated_at"],
            )
            for r in rows
        ]


class HeartbeatStore:
    """The last heartbeat of each node, stamped with the time health received it (so
    node clocks do not matter)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def record(self, beat: Heartbeat, received_at: datetime) -> None:
        value = json.dumps({"at": received_at.timestamp(), "beat": beat.model_dump(mode="json")})
        await self.redis.hset(_HEARTBEATS, beat.node_id, value)

    async def latest(self, node_ids: list[str]) -> dict[str, HeartbeatRecord]:
        if not node_ids:
            return {}
        raw = await self.redis.hmget(_HEARTBEATS, node_ids)
        found: dict[str, HeartbeatRecord] = {}
        for node_id, value in zip(node_ids, raw, strict=True):
            if value is None:
                continue
            data = json.loads(value)
            at = datetime.fromtimestamp(data["at"], UTC)
            found[node_id] = HeartbeatRecord(at, Heartbeat.model_validate(data["beat"]))
        return found

    async def forget(self, keep: set[str]) -> None:
        """Drop the heartbeats of nodes no longer watched."""
        await forget_fields(self.redis, _HEARTBEATS, keep)


async def forget_fields(redis: Redis, key: str, keep: set[str]) -> None:
    """Delete every field of the hash ``key`` (one per node) not in ``keep``."""
    known = await redis.hkeys(key)
    stale = [k for k in known if (k.decode() if isinstance(k, bytes) else k) not in keep]
    if stale:
        await redis.hdel(key, *stale)
