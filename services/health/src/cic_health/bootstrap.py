"""Wires health: its consumers and the verdict pass, which one instance runs at a time."""

from __future__ import annotations

from datetime import timedelta

from cic_common.bus import Bus
from cic_common.db import create_pool, migrate
from cic_common.events import Heartbeat, NodeDraining, NodeLost, NodeReady, NodeTerminated
from cic_common.leases import RedisLease
from cic_common.loops import Loop
from cic_common.replicas import ReplicaTable
from cic_common.service import Part, serve
from cic_common.signing import NodeAuthenticator
from redis.asyncio import Redis

from cic_health.adapters.poller import EnginePoller
from cic_health.adapters.store import HealthStore, HeartbeatStore
from cic_health.domain.verdicts import HealthPolicy
from cic_health.entrypoints.monitor import HealthMonitor
from cic_health.settings import HealthSettings

__all__ = ["run"]


async def run(settings: HealthSettings) -> None:
    pool = await create_pool(settings.postgres_dsn)
    await migrate(pool)
    redis = Redis.from_url(settings.redis_url)
    bus = await Bus.connect(settings.nats_url, producer=f"health/{settings.instance_id}")
    policy = HealthPolicy(
        late_after=timedelta(seconds=settings.late_after),
        dead_after=timedelta(seconds=settings.dead_after),
    )
    store = HealthStore(pool)
    poller = EnginePoller(settings.poll_timeout, settings.poll_concurrency)
    monitor = HealthMonitor(
        store, HeartbeatStore(redis), ReplicaTable(redis), policy,
        poller=poller, poll_interval=timedelta(seconds=settings.poll_interval),
        pass_interval=timedelta(seconds=settings.check_interval),
    )  # fmt: skip
    lease = RedisLease(redis, "health-check", ttl_seconds=max(3 * settings.check_interval, 10))
    loop = Loop(
        "health-check", monitor.due, monitor.check, interval=settings.check_interval, lease=lease
    )
    monitor.set_wake(loop.wake)
    signed = NodeAuthenticator(store.node_secret, settings.trusted_signers)
    md = settings.max_deliver
    parts: list[Part] = [
        bus.consumer(NodeReady, "health-node-ready", monitor.on_node_ready, max_deliver=md,
                     authenticate=signed),
        bus.consumer(Heartbeat, "health-heartbeat", monitor.on_heartbeat, max_deliver=md,
                     concurrency=64, deliver_new=True, authenticate=signed, linger=0.05),
        bus.consumer(NodeDraining, "health-node-draining", monitor.on_node_gone, max_deliver=md),
        bus.consumer(NodeTerminated, "health-node-terminated", monitor.on_node_gone,
                     max_deliver=md),
        bus.consumer(NodeLost, "health-node-lost", monitor.on_node_gone, max_deliver=md),
        loop,
    ]  # fmt: skip
    try:
        await serve(parts)
    finally:
        await bus.close()
        await poller.close()
        await redis.aclose()
        await pool.close()
