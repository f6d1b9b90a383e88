"""Where health reads its facts: node rows in PostgreSQL, last heartbeats in Redis."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from cic_common.events import Heartbeat
from cic_common.nodes import NodeRepository
from cic_common.replicas import Replica, ReplicaTable
from redis.asyncio import Redis

__all__ = [
    "Figures",
    "HealthStore",
    "HeartbeatRecord",
    "HeartbeatStore",
    "WatchedNode",
    "drop_fields",
    "figures",
    "forget_fields",
]

_HEARTBEATS = "cic:heartbeats"
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
    """The last heartbeat of a node as health keeps it: when it came, the engine's
    state, and the load figures the replica table carries."""

    __slots__ = ("engine_state", "figures", "received_at")

    def __init__(self, received_at: datetime, engine_state: str, figures: Figures) -> None:
        self.received_at = received_at
        self.engine_state = engine_state
        self.figures = figures


def figures(beat: Heartbeat) -> Figures:
    """What of a heartbeat goes into the node's replica-table entry."""
    return {
        "requests_running": beat.requests_running,
        "requests_waiting": beat.requests_waiting,
        "kv_cache_usage": beat.kv_cache_usage,
        "requests_per_second": beat.requests_per_second,
        "latency_p95": beat.latency_p95,
    }


class HeartbeatStore:
    """The last heartbeat of each node, stamped with the time health received it (so
    node clocks do not matter), written together with the node's replica-table entry.

    Writes are group-committed: the heartbeats handled together (one fetch from the
    stream) go to Redis in one pipeline, and each handler returns once its own write
    is done, so an event is still acked only after what it says is stored.
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._pending: list[tuple[str, str, Replica | None, asyncio.Future[bool]]] = []
        self._flush: asyncio.Task[None] | None = None

    async def record(
        self, beat: Heartbeat, received_at: datetime, refresh: Replica | None = None
    ) -> bool:
        """Store ``beat``; also rewrite ``refresh`` in the replica table if it is still
        listed there (returns whether it was)."""
        value = json.dumps([received_at.timestamp(), beat.engine_state, figures(beat)])
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((beat.node_id, value, refresh, done))
        if self._flush is None:
            self._flush = asyncio.create_task(self._write())
        return await done

    async def _write(self) -> None:
        await asyncio.sleep(0)  # the other handlers of this fetch add theirs meanwhile
        batch, self._pending, self._flush = self._pending, [], None
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hset(_HEARTBEATS, mapping={node: value for node, value, _, _ in batch})
                for _, _, replica, _ in batch:
                    if replica is not None:
                        ReplicaTable.queue_refresh(pipe, replica)
                results = iter((await pipe.execute())[1:])
        except Exception as exc:  # every waiting handler fails (and its event is retried)
            for *_, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        for _, _, replica, done in batch:
            if not done.done():
                done.set_result(bool(next(results)) if replica is not None else False)

    async def latest(self, node_ids: list[str]) -> dict[str, HeartbeatRecord]:
        if not node_ids:
            return {}
        raw = await self.redis.hmget(_HEARTBEATS, node_ids)
        found: dict[str, HeartbeatRecord] = {}
        for node_id, value in zip(node_ids, raw, strict=True):
            if value is None:
                continue
            try:
                at, state, load = json.loads(value)
            except (ValueError, TypeError):  # not a record this version wrote: none
                continue
            found[node_id] = HeartbeatRecord(datetime.fromtimestamp(at, UTC), state, load)
        return found

    async def drop(self, gone: set[str]) -> None:
        """Forget the heartbeats of nodes no longer watched."""
        await drop_fields(self.redis, _HEARTBEATS, gone)

    async def sweep(self, keep: set[str]) -> None:
        """Forget every heartbeat but those of ``keep`` (a scan of them all: on start)."""
        await forget_fields(self.redis, _HEARTBEATS, keep)


async def drop_fields(redis: Redis, key: str, gone: set[str]) -> None:
    """Delete the fields ``gone`` (node ids) of the hash ``key``."""
    if gone:
        await redis.hdel(key, *gone)


async def forget_fields(redis: Redis, key: str, keep: set[str]) -> None:
    """Delete every field of the hash ``key`` (one per node) not in ``keep``."""
    known = await redis.hkeys(key)
    stale = [k for k in known if (k.decode() if isinstance(k, bytes) else k) not in keep]
    if stale:
        await redis.hdel(key, *stale)
