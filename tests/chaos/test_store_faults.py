"""Scenario 5, the rest: PostgreSQL stopped for 3 s and started again, then Redis killed
and started again empty, under steady load. The platform runs on a PostgreSQL and a Redis
of this module's own, which nobody else is connected to. No request fails (the gateway
answers from the keys it knows while PostgreSQL is away), every request is metered once,
the replica table is whole again, and the control loops still converge."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from functools import partial

import pytest
from chaos_harness import FIGURES, SteadyLoad, deploy, metered, scale_to
from cic_common.replicas import ReplicaTable
from cic_local.private import PrivateNats, PrivatePostgres, PrivateRedis
from conftest import Running, Servers
from redis.asyncio import Redis
from support import eventually

pytestmark = pytest.mark.chaos

MODEL = "chaos-stores"
OUTAGE = 3.0
"""Seconds PostgreSQL is away: longer than the gateway keeps a key lookup (1 s)."""


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivatePostgres]:
    with PrivatePostgres(tmp_path_factory.mktemp("postgres")).running() as server:
        yield server


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    with PrivateRedis(tmp_path_factory.mktemp("redis")).running() as server:
        yield server


@pytest.fixture(scope="module")
def servers(
    private_nats: PrivateNats, postgres: PrivatePostgres, redis_server: PrivateRedis
) -> Servers:
    """This module's platform on servers it may restart (the session's NATS besides)."""
    return Servers(private_nats.url, postgres.url, f"{redis_server.url}/0")


async def listed(table: ReplicaTable, count: int) -> bool:
    try:
        return len(await table.replicas(MODEL)) == count
    except OSError:  # Redis not back yet
        return False


async def test_postgres_and_redis_restarted_under_load_lose_nothing(
    running: Running,
    servers: Servers,
    postgres: PrivatePostgres,
    redis_server: PrivateRedis,
) -> None:
    deployed = await deploy(running, MODEL, replicas=2, engine_args=["--token-delay", "0.01"])
    redis = Redis.from_url(servers.redis_url)
    table = ReplicaTable(redis)
    load = SteadyLoad(deployed, workers=4)
    try:
        async with load.running():
            await asyncio.sleep(2)
            await asyncio.to_thread(postgres.stop)  # every pooled session ended
            await asyncio.sleep(OUTAGE)  # past every cache: keys, served models
            await asyncio.to_thread(postgres.start)
            await asyncio.sleep(3)
            redis_server.kill()  # the table, leases, streaks and counts gone with it
            await asyncio.sleep(1)
            await asyncio.to_thread(redis_server.start)
            await eventually(partial(listed, table, 2), within=60)  # health writes it again
            await scale_to(deployed, 3)
            await asyncio.sleep(2)
    finally:
        await redis.aclose()
    assert load.errors == [], (load.errors[:3], load.errors[-3:])
    scenario = load.scenario("PostgreSQL away 3 s, then Redis killed and restarted empty")
    answered = (scenario.requests_sent or 0) + (scenario.streams_sent or 0) + load.warm_up
    # The usage of requests answered while PostgreSQL was away is written once it is back.
    await eventually(partial(metered, deployed, answered), within=60)
    scenario.events_published, scenario.events_lost = answered, 0
    scenario.notes = "usage events of every request; the scale-up converged after both"
    FIGURES.record(scenario)
