"""Health on real PostgreSQL and Redis: verdicts over time and a truthful replica table."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from cic_common.db import create_pool, migrate
from cic_common.events import Heartbeat, NodeReady, PoisonEvent
from cic_common.replicas import Replica, ReplicaTable
from cic_health.adapters.poller import EnginePoller
from cic_health.adapters.store import HealthStore, HeartbeatStore
from cic_health.domain.verdicts import HealthPolicy
from cic_health.entrypoints.monitor import HealthMonitor
from conftest import Servers
from redis.asyncio import Redis
from support import envelope_for

POLICY = HealthPolicy(late_after=timedelta(seconds=30), dead_after=timedelta(seconds=120))


class ScriptedPoller(EnginePoller):
    """Engines answer unless listed in ``down``: the engines in these tests are
    addresses only; the poll half meets a real (hung) engine in its own test."""

    def __init__(self) -> None:
        super().__init__()
        self.down: set[str] = set()

    async def poll(self, endpoint: str) -> tuple[bool, float]:
        return endpoint not in self.down, 0.001


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@dataclass
class World:
    monitor: HealthMonitor
    table: ReplicaTable
    pool: asyncpg.Pool
    redis: Redis
    clock: Clock
    poller: ScriptedPoller

    async def status(self, node_id: str) -> str:
        value: str = await self.pool.fetchval("SELECT status FROM nodes WHERE id = $1", node_id)
        return value

    async def routable(self, model: str) -> list[str]:
        return sorted(r.node_id for r in await self.table.replicas(model))

    async def judge(self, seconds: float) -> None:
        """Time passes: a round of polls, then a verdict pass (as health's two loops)."""
        now = self.clock.advance(seconds)
        await self.monitor.poll(now)
        await self.monitor.check(now)


@pytest.fixture
async def world(database: str, servers: Servers) -> AsyncIterator[World]:
    pool = await create_pool(database)
    await migrate(pool)
    await pool.execute("DELETE FROM nodes WHERE deployment_id = 'dhealth'")
    await pool.execute(
        "INSERT INTO deployments (id, name, model, replicas) VALUES"
        " ('dhealth', 'health', 'hmodel', 2) ON CONFLICT DO NOTHING"
    )
    for node_id in ("nh1", "nh2"):
        await pool.execute(
            "INSERT INTO nodes (id, deployment_id, generation, status, spec, backend)"
            " VALUES ($1, 'dhealth', 1, 'initializing', $2, 'local')",
            node_id,
            {"model": "hmodel"},
        )
    redis = Redis.from_url(servers.redis_url)
    await redis.flushdb()
    clock = Clock()
    poller = ScriptedPoller()
    table = ReplicaTable(redis)
    monitor = HealthMonitor(
        HealthStore(pool), HeartbeatStore(redis), table, POLICY, clock=clock, poller=poller
    )
    yield World(monitor, table, pool, redis, clock, poller)
    await redis.aclose()
    await pool.close()


async def ready(world: World, node_id: str) -> None:
    event = NodeReady(node_id=node_id, endpoint=f"http://{node_id}:8000", model="hmodel")
    await world.monitor.on_node_ready(event, envelope_for(event))


async def beat(world: World, node_id: str, running: float = 0, rps: float = 0) -> None:
    p95 = 2.5 if rps else None
    event = Heartbeat(node_id=node_id, requests_running=running, requests_per_second=rps,
                      latency_p95=p95)  # fmt: skip
    await world.monitor.on_heartbeat(event, envelope_for(event))


async def test_a_ready_node_becomes_routable_with_its_heartbeat_load(world: World) -> None:
    await ready(world, "nh1")
    await beat(world, "nh1", running=3)
    await world.monitor.check(world.clock.advance(1))
    assert await world.status("nh1") == "active"
    assert await world.status("nh2") == "initializing"
    replicas = await world.table.replicas("hmodel")
    assert [(r.node_id, r.requests_running) for r in replicas] == [("nh1", 3.0)]
    assert replicas[0].endpoint == "http://nh1:8000"


async def test_a_silent_node_leaves_the_table_then_comes_back_when_it_beats(
    world: World,
) -> None:
    await ready(world, "nh1")
    await ready(world, "nh2")
    # ready_at is the database's clock; judge from there on.
    world.clock.now = await world.pool.fetchval("SELECT max(ready_at) FROM nodes")
    await beat(world, "nh1")
    await beat(world, "nh2")
    await world.monitor.check(world.clock.advance(20))
    assert await world.routable("hmodel") == ["nh1", "nh2"]

    world.poller.down.add("http://nh1:8000")  # the node is cut off: no beats, no answers
    world.clock.advance(15)
    await beat(world, "nh2")
    await world.judge(1)
    assert await world.status("nh1") == "unhealthy"
    assert await world.routable("hmodel") == ["nh2"]

    world.poller.down.clear()  # the link is back
    await beat(world, "nh1")
    await world.judge(11)
    assert await world.status("nh1") == "unhealthy"  # one good poll is not enough
    await beat(world, "nh1")
    await world.judge(11)
    assert await world.status("nh1") == "active"
    assert await world.routable("hmodel") == ["nh1", "nh2"]


async def test_a_node_whose_agent_died_but_engine_serves_is_degraded_then_replaced(
    world: World,
) -> None:
    await ready(world, "nh1")
    world.clock.now = await world.pool.fetchval("SELECT ready_at FROM nodes WHERE id = 'nh1'")
    await world.judge(1)
    await world.judge(39)  # no heartbeat since ready; the engine answers polls
    assert await world.status("nh1") == "active"
    (replica,) = await world.table.replicas("hmodel")
    assert replica.degraded
    await world.judge(81)  # silent for over two minutes
    assert await world.status("nh1") == "dead"
    assert await world.routable("hmodel") == []


async def test_a_node_unhealthy_past_the_deadline_is_dead(world: World) -> None:
    await ready(world, "nh1")
    world.poller.down.add("http://nh1:8000")  # neither the agent nor the engine answers
    world.clock.now = datetime.now(UTC)
    await world.monitor.check(world.clock.advance(60))
    assert await world.status("nh1") == "unhealthy"
    await world.monitor.check(world.clock.advance(60))
    assert await world.status("nh1") == "unhealthy"
    await world.monitor.check(world.clock.advance(61))
    assert await world.status("nh1") == "dead"
    assert await world.routable("hmodel") == []


async def test_a_flushed_redis_is_rebuilt_by_the_next_pass(world: World) -> None:
    await ready(world, "nh1")
    await beat(world, "nh1")
    world.clock.now = datetime.now(UTC)
    await world.monitor.check(world.clock.advance(1))
    before = await world.table.version()
    await world.redis.flushdb()
    assert await world.routable("hmodel") == []
    await world.monitor.check(world.clock.advance(1))
    assert await world.routable("hmodel") == ["nh1"]
    assert await world.table.version() >= 1
    assert before >= 1


async def test_node_ready_for_an_unknown_node_is_poison(world: World) -> None:
    event = NodeReady(node_id="nforged", endpoint="http://evil:1", model="hmodel")
    with pytest.raises(PoisonEvent, match="unknown node"):
        await world.monitor.on_node_ready(event, envelope_for(event))
    assert await world.routable("hmodel") == []


async def test_a_heartbeat_refreshes_a_listed_replicas_load_before_the_next_pass(
    world: World,
) -> None:
    await ready(world, "nh1")
    world.clock.now = datetime.now(UTC)
    await world.monitor.check(world.clock.advance(1))
    version = await world.table.version()
    await beat(world, "nh1", running=7, rps=3)
    (replica,) = await world.table.replicas("hmodel")
    assert (replica.requests_running, replica.requests_per_second, replica.latency_p95) == (
        7,
        3,
        2.5,
    )
    assert await world.table.version() == version  # the same replicas, fresher figures
    await beat(world, "nh2", running=9)  # not listed (not ready): stays out
    assert [r.node_id for r in await world.table.replicas("hmodel")] == ["nh1"]
    assert await world.table.entries([("hmodel", "nh1"), ("hmodel", "nh2")]) == [replica, None]


async def test_a_stale_entry_for_a_node_not_serving_is_removed_by_the_next_pass(
    world: World,
) -> None:
    await ready(world, "nh1")
    world.clock.now = datetime.now(UTC)
    await world.monitor.check(world.clock.advance(1))
    stale = Replica(node_id="nh2", deployment_id="dhealth", model="hmodel",
                    endpoint="http://nh2:8000")  # fmt: skip
    await world.table.apply([stale], [])  # listed, but initializing in PostgreSQL
    assert await world.routable("hmodel") == ["nh1", "nh2"]
    await world.monitor.check(world.clock.advance(1))
    assert await world.routable("hmodel") == ["nh1"]
