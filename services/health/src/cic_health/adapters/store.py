"""Where health reads its facts: node rows in PostgreSQL, last heartbeats in Redis."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import asyncpg
from cic_common.events import Heartbeat
from cic_common.nodes import NodeRepository
from cic_common.replicas import ReplicaTable
from redis.asyncio import Redis

__all__ = [
    "Figures",
    "HealthStore",
    "HeartbeatRecord",
    "HeartbeatStore",
    "WatchedNode",
    "drop_fields",
    "figures_json",
    "forget_fields",
]

_HEARTBEATS = "cic:heartbeats"
"""node id -> ``<received at, epoch seconds> <engine state>``: what every pass reads."""
_LOADS = "cic:heartbeats:load"
"""node id -> load figures (JSON): read for new table entries only."""
_WATCHED = ("active", "unhealthy", "draining")

Figures = dict[str, float | None]
"""Load figures by ``Replica`` field name."""


@dataclass(frozen=True)
class WatchedNode:
    id: str
    deployment_id: str
    model: str
    status: str
    endpoint: str | None
    ready_at: datetime | None
    status_since: datetime


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


class HeartbeatRecord:
    """The last heartbeat of a node as health keeps it: when it came and the engine's
    state (its load figures are kept apart: only new table entries need them)."""

    __slots__ = ("at", "engine_state")

    def __init__(self, at: float, engine_state: str) -> None:
        self.at = at
        """When health received it (epoch seconds)."""
        self.engine_state = engine_state

    @property
    def received_at(self) -> datetime:
        return datetime.fromtimestamp(self.at, UTC)


_FIGURES = {
    "requests_running", "requests_waiting", "kv_cache_usage", "requests_per_second",
    "latency_p95",
}  # fmt: skip
"""The heartbeat's fields that go into the node's replica-table entry (same names)."""


def figures_json(beat: Heartbeat) -> str:
    """The load figures of ``beat`` as a JSON object of ``Replica`` fields."""
    return beat.model_dump_json(include=_FIGURES)


class HeartbeatStore:
    """The last heartbeat of each node, stamped with the time health received it (so
    node clocks do not matter), written together with the load figures of the node's
    replica-table entry when it is listed: a batch of heartbeats is three commands."""

    def __init__(self, redis: Redis, table: ReplicaTable | None = None) -> None:
        self.redis = redis
        self._table = table or ReplicaTable(redis)

    async def record(self, beats: list[Heartbeat], received_at: datetime) -> None:
        """Store ``beats``; for those whose engine is ready, also put their load
        figures in their replica-table entries, where listed."""
        stamp = repr(received_at.timestamp())
        records = {beat.node_id: f"{stamp} {beat.engine_state}" for beat in beats}
        loads = [(beat.node_id, figures_json(beat)) for beat in beats]
        routed = [load for beat, load in zip(beats, loads, strict=True)
                  if beat.engine_state == "ready"]  # fmt: skip
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(_HEARTBEATS, mapping=cast(Any, records))
            pipe.hset(_LOADS, mapping=cast(Any, dict(loads)))
            if routed:
                await self._table.queue_merge(pipe, routed)
            await pipe.execute()

    async def every(self) -> dict[str, HeartbeatRecord]:
        """The last heartbeat of every node that sent one (one read, however many)."""
        found: dict[str, HeartbeatRecord] = {}
        raw: dict[bytes, bytes] = await self.redis.hgetall(_HEARTBEATS)  # type: ignore[assignment]
        for node_id, value in raw.items():
            at, _, state = value.partition(b" ")
            try:
                found[node_id.decode()] = HeartbeatRecord(float(at), state.decode())
            except ValueError:  # not a record this version wrote: none
                continue
        return found

    async def loads(self, node_ids: list[str]) -> dict[str, Figures]:
        """The load figures of these nodes' last heartbeats."""
        if not node_ids:
            return {}
        raw = await self.redis.hmget(_LOADS, node_ids)
        return {n: json.loads(v) for n, v in zip(node_ids, raw, strict=True) if v is not None}

    async def drop(self, gone: set[str]) -> None:
        """Forget the heartbeats of nodes no longer watched."""
        await drop_fields(self.redis, _HEARTBEATS, gone)
        await drop_fields(self.redis, _LOADS, gone)

    async def sweep(self, keep: set[str], scope: Callable[[str], bool]) -> None:
        """Forget the heartbeats of the nodes in ``scope`` but those of ``keep`` (a scan
        of them all: on start, and when shards move)."""
        await forget_fields(self.redis, _HEARTBEATS, keep, scope)
        await forget_fields(self.redis, _LOADS, keep, scope)


async def drop_fields(redis: Redis, key: str, gone: set[str]) -> None:
    """Delete the fields ``gone`` (node ids) of the hash ``key``."""
    if gone:
        await redis.hdel(key, *gone)


async def forget_fields(
    redis: Redis, key: str, keep: set[str], scope: Callable[[str], bool]
) -> None:
    """Delete every field of the hash ``key`` (one per node) in ``scope`` but ``keep``."""
    fields = (k.decode() if isinstance(k, bytes) else k for k in await redis.hkeys(key))
    stale = [k for k in fields if k not in keep and scope(k)]
    if stale:
        await redis.hdel(key, *stale)
