"""Where health reads its facts: node rows in PostgreSQL, last heartbeats in Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar, cast

import asyncpg
from cic_common.events import Heartbeat
from cic_common.lifecycle import NodeStatus
from cic_common.nodes import NodeRepository
from cic_common.replicas import ReplicaTable
from redis.asyncio import Redis

__all__ = [
    "Figures",
    "HealthStore",
    "HeartbeatRecord",
    "HeartbeatStore",
    "ParsedHash",
    "WatchedNode",
    "WatchedNodes",
    "drop_fields",
    "figures_json",
    "forget_fields",
]

T = TypeVar("T")
_HEARTBEATS = "cic:heartbeats"
"""node id -> ``<received at, epoch seconds> <engine state> <load figures, JSON>``:
every pass reads the first two; new table entries need the figures too."""
_WATCHED = ("active", "unhealthy", "draining")

Figures = dict[str, float | None]
"""Load figures by ``Replica`` field name."""


@dataclass(frozen=True)
class WatchedNode:
    id: str
    deployment_id: str
    model: str
    status: NodeStatus
    endpoint: str | None
    ready_at: datetime | None
    status_since: datetime


class HealthStore(NodeRepository):
    """Node transitions health owns, and the nodes it watches."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self._pool = pool

    async def changed_since(self, since: datetime | None) -> tuple[list[WatchedNode], datetime]:
        """Every watched node (``since`` None), or every node whatever its status whose
        row changed after ``since``; and the database's clock at the read."""
        query = (
            "SELECT id, deployment_id, spec->>'model' AS model, status, endpoint, ready_at,"
            " updated_at FROM nodes WHERE "
        )
        async with self._pool.acquire() as conn, conn.transaction(readonly=True):
            read_at: datetime = await conn.fetchval("SELECT now()")
            if since is None:
                rows = await conn.fetch(query + "status = ANY($1::text[])", list(_WATCHED))
            else:
                rows = await conn.fetch(query + "updated_at > $1", since)
        nodes = [
            WatchedNode(r["id"], r["deployment_id"], r["model"], NodeStatus(r["status"]),
                        r["endpoint"], r["ready_at"], r["updated_at"])
            for r in rows
        ]  # fmt: skip
        return nodes, read_at


class WatchedNodes:
    """The nodes health watches, kept in memory: each read fetches only the rows that
    changed lately (every status change stamps ``updated_at``), reaching back
    ``overlap`` to catch transactions that committed late; every ``full_every`` all
    of them are read again, so nothing a narrow read missed stays wrong for long."""

    def __init__(
        self, store: HealthStore, *, full_every: float = 60.0, overlap: float = 60.0
    ) -> None:
        self._store = store
        self._full_every = full_every
        self._overlap = timedelta(seconds=overlap)
        self._nodes: dict[str, WatchedNode] | None = None
        self._full_at = 0.0
        self._since: datetime | None = None

    async def current(self) -> list[WatchedNode]:
        started = time.monotonic()
        if self._nodes is None or started - self._full_at >= self._full_every:
            nodes, read_at = await self._store.changed_since(None)
            self._nodes, self._full_at = {n.id: n for n in nodes}, started
        else:
            nodes, read_at = await self._store.changed_since(self._since)
            for node in nodes:
                if node.status in _WATCHED:
                    self._nodes[node.id] = node
                else:
                    self._nodes.pop(node.id, None)
        self._since = read_at - self._overlap
        return list(self._nodes.values())


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
    replica-table entry when it is listed: a batch of heartbeats is two commands."""

    def __init__(self, redis: Redis, table: ReplicaTable | None = None) -> None:
        self.redis = redis
        self._table = table or ReplicaTable(redis)
        self._records = ParsedHash(_HEARTBEATS, _parse_heartbeat)

    async def record(self, beats: list[Heartbeat], received_at: datetime) -> None:
        """Store ``beats``; for those whose engine is ready, also put their load
        figures in their replica-table entries, where listed."""
        stamp = repr(received_at.timestamp())
        records: dict[str, str] = {}
        routed: list[tuple[str, str]] = []
        for beat in beats:
            load = figures_json(beat)
            records[beat.node_id] = f"{stamp} {beat.engine_state} {load}"
            if beat.engine_state == "ready":
                routed.append((beat.node_id, load))
        writes = [self.redis.hset(_HEARTBEATS, mapping=cast(Any, records))]
        if routed:
            writes.append(self._table.merge(routed))
        await asyncio.gather(*writes)

    async def every(self) -> dict[str, HeartbeatRecord]:
        """The last heartbeat of every node that sent one (one read, however many)."""
        return await self._records.read(self.redis)

    async def loads(self, node_ids: list[str]) -> dict[str, Figures]:
        """The load figures of these nodes' last heartbeats."""
        if not node_ids:
            return {}
        raw: list[bytes | None] = await self.redis.hmget(_HEARTBEATS, node_ids)  # type: ignore[assignment]
        found = {}
        for node_id, value in zip(node_ids, raw, strict=True):
            with contextlib.suppress(ValueError, IndexError):
                found[node_id] = json.loads(value.split(b" ", 2)[2]) if value else None
        return {n: load for n, load in found.items() if isinstance(load, dict)}

    async def drop(self, gone: set[str]) -> None:
        """Forget the heartbeats of nodes no longer watched."""
        await drop_fields(self.redis, _HEARTBEATS, gone)

    async def sweep(self, keep: set[str], scope: Callable[[str], bool]) -> None:
        """Forget the heartbeats of the nodes in ``scope`` but those of ``keep`` (a scan
        of them all: on start, and when shards move)."""
        await forget_fields(self.redis, _HEARTBEATS, keep, scope)


def _parse_heartbeat(value: bytes) -> HeartbeatRecord | None:
    at, _, rest = value.partition(b" ")
    state, _, _ = rest.partition(b" ")
    try:
        return HeartbeatRecord(float(at), state.decode())
    except ValueError:  # not a record this version wrote: none
        return None


class ParsedHash(Generic[T]):
    """A Redis hash of node records read whole each pass, parsed only where a value
    changed since the last read (most did not: parsing is what the read costs)."""

    def __init__(self, key: str, parse: Callable[[bytes], T | None]) -> None:
        self._key = key
        self._parse = parse
        self._last: dict[bytes, tuple[bytes, str, T | None]] = {}

    async def read(self, redis: Redis) -> dict[str, T]:
        raw: dict[bytes, bytes] = await redis.hgetall(self._key)  # type: ignore[assignment]
        last, fresh, found = self._last, {}, {}
        for field, value in raw.items():
            seen = last.get(field)
            if seen is None or seen[0] != value:
                seen = (value, field.decode(), self._parse(value))
            fresh[field] = seen
            if seen[2] is not None:
                found[seen[1]] = seen[2]
        self._last = fresh
        return found


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
