"""Autoscaling on real PostgreSQL and Redis: load in the replica table moves the count
the scheduler holds, after the policy's delay, within the operator's bounds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from cic_common.db import create_pool, migrate
from cic_common.replicas import Replica, ReplicaTable
from cic_scheduler.adapters.store import SchedulerStore
from cic_scheduler.entrypoints.autoscaler import Autoscaler
from conftest import Servers
from redis.asyncio import Redis


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database)
    await migrate(pool)
    await pool.execute(
        "INSERT INTO deployments (id, name, model, replicas, autoscaler, min_replicas,"
        " max_replicas, target_in_flight) VALUES"
        " ('dauto', 'auto', 'amodel', 2, 'in_flight', 1, 4, 2) ON CONFLICT DO NOTHING"
    )
    yield pool
    await pool.close()


def replica(node_id: str, running: float, draining: bool = False) -> Replica:
    return Replica(node_id=node_id, deployment_id="dauto", model="amodel",
                   endpoint=f"http://{node_id}", requests_running=running,
                   draining=draining)  # fmt: skip


async def test_load_scales_up_after_the_delay_and_back_down(
    pool: asyncpg.Pool, servers: Servers
) -> None:
    redis = Redis.from_url(servers.redis_url)
    await redis.flushdb()
    table = ReplicaTable(redis)
    reconciled: list[str] = []

    async def reconcile(deployment_id: str) -> None:
        reconciled.append(deployment_id)

    clock = Clock()
    autoscaler = Autoscaler(SchedulerStore(pool), table, reconcile, clock)

    async def held() -> int:
        value: int = await pool.fetchval(
            "SELECT autoscaled_replicas FROM deployments WHERE id = 'dauto'"
        )
        return value

    async def one_pass() -> None:
        for deployment in await autoscaler.due():
            await autoscaler.process(deployment)

    try:
        # 8 requests in flight on the routable replicas (the draining one does not count).
        await table.replace(
            {"amodel": [replica("n1", 5), replica("n2", 3), replica("n3", 9, True)]}
        )
        await one_pass()
        assert await held() == 2  # wanted 4, but only just
        clock.now += timedelta(seconds=31)
        await one_pass()
        assert await held() == 4
        assert reconciled == ["dauto"]

        await table.replace({"amodel": [replica("n1", 0), replica("n2", 0)]})
        await one_pass()
        clock.now += timedelta(minutes=4)
        await one_pass()
        assert await held() == 4  # the downscale delay has not passed
        clock.now += timedelta(minutes=1, seconds=1)
        await one_pass()
        assert await held() == 1  # the operator's minimum
        assert reconciled == ["dauto", "dauto"]
    finally:
        await redis.aclose()


async def test_request_rate_and_latency_from_the_table_drive_their_policies(
    pool: asyncpg.Pool, servers: Servers
) -> None:
    await pool.execute(
        "INSERT INTO deployments (id, name, model, replicas, autoscaler, min_replicas,"
        " max_replicas, target_rps, target_p95) VALUES"
        " ('drps', 'rps', 'rmodel', 1, 'requests_per_second', 1, 8, 4, 10),"
        " ('dlat', 'lat', 'lmodel', 2, 'latency', 1, 8, 4, 10) ON CONFLICT DO NOTHING"
    )
    redis = Redis.from_url(servers.redis_url)
    await redis.flushdb()
    table = ReplicaTable(redis)

    async def reconcile(deployment_id: str) -> None:
        return None

    clock = Clock()
    autoscaler = Autoscaler(SchedulerStore(pool), table, reconcile, clock)

    def busy(node_id: str, model: str, rps: float, p95: float) -> Replica:
        return Replica(node_id=node_id, deployment_id="d", model=model, endpoint="http://x",
                       requests_per_second=rps, latency_p95=p95)  # fmt: skip

    try:
        await table.replace({
            "rmodel": [busy("r1", "rmodel", 9.0, 1.0)],  # 9 req/s at 4 per replica: 3
            # p95 weighted by requests: (30 * 3 + 10 * 1) / 4 = 25 s, 2.5x the target.
            "lmodel": [busy("l1", "lmodel", 3.0, 30.0), busy("l2", "lmodel", 1.0, 10.0)],
        })  # fmt: skip
        for _ in range(2):
            for deployment in await autoscaler.due():
                if deployment.id in ("drps", "dlat"):
                    await autoscaler.process(deployment)
            clock.now += timedelta(seconds=31)
        held = dict(await pool.fetch(
            "SELECT id, autoscaled_replicas FROM deployments WHERE id IN ('drps', 'dlat')"
        ))  # fmt: skip
        assert held == {"drps": 3, "dlat": 5}
    finally:
        await redis.aclose()
