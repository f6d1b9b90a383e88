"""Wires the scheduler: consumers of its events and the periodic reconcile loop."""

from __future__ import annotations

from cic_common.bus import Bus
from cic_common.db import create_pool, migrate
from cic_common.events import (
    DeploymentChanged,
    LaunchFailed,
    NodeLost,
    NodeTerminated,
    TerminationWarning,
)
from cic_common.leases import RedisLease
from cic_common.loops import Loop
from cic_common.nodes import NodeRepository
from cic_common.replicas import ReplicaTable
from cic_common.scripts import close_scripts
from cic_common.service import Part, serve
from cic_common.signing import NodeAuthenticator
from redis.asyncio import Redis

from cic_scheduler.adapters.store import SchedulerStore
from cic_scheduler.entrypoints.autoscaler import Autoscaler
from cic_scheduler.entrypoints.handlers import Scheduler
from cic_scheduler.settings import SchedulerSettings

__all__ = ["run"]


async def run(settings: SchedulerSettings) -> None:
    pool = await create_pool(settings.postgres_dsn)
    await migrate(pool)
    bus = await Bus.connect(settings.nats_url, producer=f"scheduler/{settings.instance_id}")
    store = SchedulerStore(pool)
    redis = Redis.from_url(settings.redis_url)
    nodes = NodeRepository(pool)
    scheduler = Scheduler(store, nodes, bus, settings.resend_after)
    autoscaler = Autoscaler(store, ReplicaTable(redis), scheduler.reconcile)
    md = settings.max_deliver
    parts: list[Part] = [
        bus.consumer(DeploymentChanged, "scheduler-deployment-changed",
                     scheduler.on_deployment_changed, max_deliver=md),
        bus.consumer(TerminationWarning, "scheduler-termination-warning",
                     scheduler.on_termination_warning, max_deliver=md,
                     authenticate=NodeAuthenticator(nodes.node_secret,
                                                    settings.trusted_signers)),
        bus.consumer(NodeTerminated, "scheduler-node-terminated",
                     scheduler.on_node_gone, max_deliver=md),
        bus.consumer(LaunchFailed, "scheduler-launch-failed", scheduler.on_node_gone,
                     max_deliver=md),
        bus.consumer(NodeLost, "scheduler-node-lost", scheduler.on_node_gone, max_deliver=md),
        Loop(
            "scheduler-autoscale",
            autoscaler.due,
            autoscaler.process,
            interval=settings.autoscale_interval,
            lease=RedisLease(redis, "scheduler-autoscale", 3 * settings.autoscale_interval),
        ),
        Loop(
            "scheduler-reconcile",
            store.deployments_to_reconcile,
            scheduler.reconcile,
            interval=settings.reconcile_interval,
        ),
    ]  # fmt: skip
    try:
        await serve(parts)
    finally:
        await bus.close()
        await close_scripts(redis)
        await redis.aclose()
        await pool.close()
