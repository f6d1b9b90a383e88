"""Wires health: its consumers, the verdict pass over this instance's shards of the
nodes, and the paced polls of their engines."""

from __future__ import annotations

import logging
from datetime import timedelta

from cic_common.bus import Bus
from cic_common.db import create_pool, migrate
from cic_common.events import (
    Heartbeat,
    NodeDraining,
    NodeLost,
    NodeReady,
    NodeTerminated,
    ReplicaSuspected,
)
from cic_common.leases import ShardLeases
from cic_common.loops import Loop
from cic_common.replicas import ReplicaTable
from cic_common.scripts import close_scripts
from cic_common.service import Part, serve
from cic_common.signing import NodeAuthenticator
from redis.asyncio import Redis

from cic_health.adapters.poller import EnginePoller
from cic_health.adapters.store import HealthStore, HeartbeatStore
from cic_health.domain.verdicts import HealthPolicy
from cic_health.entrypoints.monitor import HealthMonitor
from cic_health.settings import HealthSettings

__all__ = ["run"]

log = logging.getLogger(__name__)


async def run(settings: HealthSettings) -> None:
    pool = await create_pool(settings.postgres_dsn)
    await migrate(pool)
    redis = Redis.from_url(settings.redis_url)
    bus = await Bus.connect(
        settings.nats_url, producer=f"health/{settings.instance_id}", update_streams=False
    )
    policy = HealthPolicy(
        late_after=timedelta(seconds=settings.late_after),
        dead_after=timedelta(seconds=settings.dead_after),
    )
    store = HealthStore(pool)
    poller = EnginePoller(settings.poll_timeout, settings.poll_concurrency)
    table = ReplicaTable(redis)
    shards = ShardLeases(redis, "health", settings.shards,
                         ttl_seconds=max(3 * settings.check_interval, 10))  # fmt: skip
    monitor = HealthMonitor(
        store, HeartbeatStore(redis, table), table, policy, poller=poller, shards=shards,
        poll_interval=timedelta(seconds=settings.poll_interval),
        poll_tick=timedelta(seconds=settings.poll_tick),
        hurry_spacing=settings.suspect_poll_spacing,
    )  # fmt: skip
    loop = Loop("health-check", monitor.due, monitor.check, interval=settings.check_interval)
    polls = Loop("health-poll", monitor.engines.due, monitor.poll, interval=settings.poll_tick)
    monitor.set_wake(loop.wake)
    signed = NodeAuthenticator(store.node_secret, settings.trusted_signers)
    md = settings.max_deliver
    parts: list[Part] = [
        bus.consumer(NodeReady, "health-node-ready", monitor.on_node_ready, max_deliver=md,
                     authenticate=signed),
        bus.batch_consumer(Heartbeat, "health-heartbeats", monitor.on_heartbeats, batch=256,
                           deliver_new=True, authenticate=signed, linger=0.1,
                           superseded=True),
        bus.consumer(NodeDraining, "health-node-draining", monitor.on_node_gone, max_deliver=md),
        bus.consumer(NodeTerminated, "health-node-terminated", monitor.on_node_gone,
                     max_deliver=md),
        bus.consumer(NodeLost, "health-node-lost", monitor.on_node_gone, max_deliver=md),
        bus.consumer(ReplicaSuspected, "health-replica-suspected", monitor.on_replica_suspected,
                     max_deliver=md, concurrency=8),
        loop,
        polls,
    ]  # fmt: skip
    try:
        await serve(parts)
    finally:
        try:
            await shards.release()  # the other instances take its shards at once
        except Exception:
            log.warning("could not give back the shards; they expire instead", exc_info=True)
        await bus.close()
        await poller.close()
        await close_scripts(redis)
        await redis.aclose()
        await pool.close()
