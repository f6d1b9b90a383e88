"""Scenario 5, in part: the infrastructure fails under steady load. Redis is flushed (the
replica table, leases, poll streaks and rate counts gone at once) and NATS is restarted
with usage events in flight: no request fails, the table is whole again, every request
is metered once, what JetStream stored survives, and the control loops still converge."""

from __future__ import annotations

import asyncio
from functools import partial

import pytest
from chaos_harness import FIGURES, SteadyLoad, deploy, metered, scale_to
from cic_common.bus import Bus
from cic_common.replicas import ReplicaTable
from cic_local.infra import PrivateNats
from conftest import Running, Servers
from redis.asyncio import Redis
from support import eventually

pytestmark = pytest.mark.chaos

MODEL = "chaos-infra"


async def listed(table: ReplicaTable, count: int) -> bool:
    return len(await table.replicas(MODEL)) == count


async def stored_events(bus: Bus) -> tuple[int, int, int] | None:
    """The first and last sequence numbers and the count of the events JetStream holds;
    None while the server cannot be asked."""
    try:
        state = (await bus.js.stream_info("CIC_EVENTS")).state
    except Exception:  # reconnecting after the restart
        return None
    return int(state.first_seq), int(state.last_seq), int(state.messages)


async def test_redis_flushed_and_nats_restarted_under_load_lose_nothing(
    running: Running, servers: Servers, private_nats: PrivateNats, bus: Bus
) -> None:
    deployed = await deploy(running, MODEL, replicas=2, engine_args=["--token-delay", "0.01"])
    redis = Redis.from_url(servers.redis_url)
    table = ReplicaTable(redis)
    load = SteadyLoad(deployed, workers=4)
    try:
        async with load.running():
            await asyncio.sleep(2)
            await redis.flushdb()  # everything health and the gateway keep in Redis
            await eventually(partial(listed, table, 2), within=60)  # health writes it again
            await asyncio.sleep(3)
            stored = await stored_events(bus)
            private_nats.restart()  # usage batches published meanwhile are retried
            kept = await eventually(partial(stored_events, bus), within=60)
            await scale_to(deployed, 3)
            await asyncio.sleep(2)
    finally:
        await redis.aclose()
    assert load.errors == [], (load.errors[:3], load.errors[-3:])
    assert stored is not None
    assert kept is not None
    # File storage: every event stored before the restart is still there (none deleted:
    # the count is the old one plus those stored since).
    assert kept[0] == stored[0]
    assert kept[2] == stored[2] + (kept[1] - stored[1])
    scenario = load.scenario("Redis flushed, then NATS restarted, under load")
    answered = (scenario.requests_sent or 0) + (scenario.streams_sent or 0) + load.warm_up
    # Every answered request metered once: the usage published around the restart is
    # not lost, and none is counted twice.
    await eventually(partial(metered, deployed, answered), within=60)
    scenario.events_published, scenario.events_lost = answered, 0
    scenario.notes = f"usage events of every request; {stored[2]} stored events kept"
    FIGURES.record(scenario)
