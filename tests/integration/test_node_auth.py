"""On real NATS and PostgreSQL: a forged ``node-ready`` is dead-lettered and changes
nothing; the node's own signed one makes it active."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from cic_common.bus import Bus
from cic_common.db import create_pool, migrate
from cic_common.events import NodeReady
from cic_common.replicas import ReplicaTable
from cic_common.signing import NodeAuthenticator
from cic_health.adapters.store import HealthStore, HeartbeatStore
from cic_health.domain.verdicts import HealthPolicy
from cic_health.entrypoints.monitor import HealthMonitor
from conftest import Servers
from redis.asyncio import Redis
from support import dead_letters, eventually

SECRET = "the-node-secret"


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database)
    await migrate(pool)
    await pool.execute(
        "INSERT INTO deployments (id, name, model, replicas) VALUES"
        " ('dauth', 'auth', 'amodel', 1) ON CONFLICT DO NOTHING"
    )
    await pool.execute(
        "INSERT INTO nodes (id, deployment_id, generation, status, spec, backend, secret)"
        " VALUES ('nauth', 'dauth', 1, 'initializing', $1, 'local', $2)",
        {"model": "amodel"},
        SECRET,
    )
    yield pool
    await pool.close()


async def test_forged_node_ready_is_dead_lettered_and_the_real_one_accepted(
    bus: Bus, pool: asyncpg.Pool, servers: Servers
) -> None:
    redis = Redis.from_url(servers.redis_url)
    store = HealthStore(pool)
    monitor = HealthMonitor(store, HeartbeatStore(redis), ReplicaTable(redis), HealthPolicy())
    consumer = bus.consumer(
        NodeReady, "auth-node-ready", monitor.on_node_ready,
        authenticate=NodeAuthenticator(store.node_secret),
    )  # fmt: skip
    task = asyncio.create_task(consumer.run())
    attacker = await Bus.connect(servers.nats_url, producer="attacker", signing_secret="guess")
    node = await Bus.connect(servers.nats_url, producer="agent", signing_secret=SECRET)
    try:
        forged = NodeReady(node_id="nauth", endpoint="http://attacker:6666", model="amodel")
        await attacker.publish(forged)
        letters = await eventually(lambda: dead_letters(bus, "cic.node-ready.nauth"))
        assert "bad signature" in letters[0][1]["Cic-Dlq-Reason"]
        row = await pool.fetchrow("SELECT status, endpoint FROM nodes WHERE id = 'nauth'")
        assert (row["status"], row["endpoint"]) == ("initializing", None)

        real = NodeReady(node_id="nauth", endpoint="http://10.0.0.7:8000", model="amodel")
        await node.publish(real)

        async def active() -> bool:
            status = await pool.fetchval("SELECT status FROM nodes WHERE id = 'nauth'")
            return bool(status == "active")

        await eventually(active)
        endpoint = await pool.fetchval("SELECT endpoint FROM nodes WHERE id = 'nauth'")
        assert endpoint == "http://10.0.0.7:8000"
    finally:
        consumer.stop()
        await task
        await attacker.close()
        await node.close()
        await redis.aclose()
