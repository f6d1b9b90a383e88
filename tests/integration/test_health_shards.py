"""Several health instances share the nodes by shard: each node is polled and judged by
one of them, the table stays whole, and a leaving instance's nodes are taken over."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from cic_common.db import create_pool, migrate
from cic_common.events import Heartbeat
from cic_common.leases import ShardLeases
from cic_common.replicas import ReplicaTable
from cic_health.adapters.poller import EnginePoller
from cic_health.adapters.store import HealthStore, HeartbeatStore
from cic_health.domain.verdicts import HealthPolicy
from cic_health.entrypoints.monitor import HealthMonitor
from conftest import Servers
from redis.asyncio import Redis
from support import envelope_for

NODES = [f"nshard{i}" for i in range(12)]


class CountingPoller(EnginePoller):
    """Counts the polls of this test's engines (other tests' nodes share the database)."""

    def __init__(self) -> None:
        super().__init__()
        self.polled: list[str] = []

    async def poll(self, endpoint: str) -> tuple[bool, float]:
        if "nshard" in endpoint:
            self.polled.append(endpoint)
        return True, 0.001


class Instance:
    def __init__(self, pool: asyncpg.Pool, redis: Redis) -> None:
        self.poller = CountingPoller()
        self.shards = ShardLeases(redis, "health", 4, ttl_seconds=30)
        table = ReplicaTable(redis)
        self.monitor = HealthMonitor(
            HealthStore(pool), HeartbeatStore(redis, table), table,
            HealthPolicy(), poller=self.poller, shards=self.shards,
        )  # fmt: skip


@pytest.fixture
async def fleet(database: str, servers: Servers) -> AsyncIterator[tuple[Redis, Instance, Instance]]:
    pool = await create_pool(database)
    await migrate(pool)
    await pool.execute("DELETE FROM nodes WHERE deployment_id = 'dshard'")
    await pool.execute(
        "INSERT INTO deployments (id, name, model, replicas) VALUES"
        " ('dshard', 'shard', 'smodel', 12) ON CONFLICT DO NOTHING"
    )
    for node_id in NODES:
        await pool.execute(
            "INSERT INTO nodes (id, deployment_id, generation, status, spec, backend, endpoint,"
            " ready_at) VALUES ($1, 'dshard', 1, 'active', $2, 'local', $3, now())",
            node_id, {"model": "smodel"}, f"http://{node_id}:8000",
        )  # fmt: skip
    redis = Redis.from_url(servers.redis_url)
    await redis.flushdb()
    yield redis, Instance(pool, redis), Instance(pool, redis)
    await pool.execute("DELETE FROM nodes WHERE deployment_id = 'dshard'")
    await redis.aclose()
    await pool.close()


async def listed(redis: Redis) -> list[str]:
    return sorted(r.node_id for r in await ReplicaTable(redis).replicas("smodel"))


async def test_two_instances_split_the_nodes_and_one_takes_over_when_the_other_leaves(
    fleet: tuple[Redis, Instance, Instance],
) -> None:
    redis, a, b = fleet
    now = datetime.now(UTC)
    beats = [Heartbeat(node_id=n) for n in NODES]
    await a.monitor.on_heartbeats([(beat, envelope_for(beat)) for beat in beats])

    await a.monitor.check(now)  # alone: every shard, every node
    assert await listed(redis) == sorted(NODES)
    for instance in (b, a, b):  # b joins: a gives back half, b takes it
        await instance.monitor.check(now)

    later = now + timedelta(seconds=11)
    await a.monitor.poll(later)
    await b.monitor.poll(later)
    polled_a, polled_b = set(a.poller.polled), set(b.poller.polled)
    assert polled_a
    assert polled_b
    assert not polled_a & polled_b
    assert polled_a | polled_b == {f"http://{n}:8000" for n in NODES}
    assert len(a.poller.polled) + len(b.poller.polled) == len(NODES)  # each polled once

    await a.monitor.check(later)
    await b.monitor.check(later)
    assert await listed(redis) == sorted(NODES)  # neither unlists the other's nodes

    await b.shards.release()  # b leaves
    a.poller.polled.clear()
    await a.monitor.check(later)
    await a.monitor.poll(now + timedelta(seconds=22))
    assert set(a.poller.polled) == {f"http://{n}:8000" for n in NODES}
    assert await listed(redis) == sorted(NODES)
