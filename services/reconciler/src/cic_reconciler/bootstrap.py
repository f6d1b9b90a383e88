"""Wires the reconciler: one periodic pass, run by one instance at a time."""

from __future__ import annotations

from datetime import timedelta

from cic_common.bus import Bus
from cic_common.db import create_pool, migrate
from cic_common.leases import RedisLease
from cic_common.loops import Loop
from cic_common.scripts import close_scripts
from cic_common.service import serve
from redis.asyncio import Redis

from cic_reconciler.adapters.sources import NatsInventory, ReconcilerStore
from cic_reconciler.domain.diff import Graces
from cic_reconciler.entrypoints.reconcile import Reconciler
from cic_reconciler.settings import ReconcilerSettings

__all__ = ["run"]


async def run(settings: ReconcilerSettings) -> None:
    pool = await create_pool(settings.postgres_dsn)
    await migrate(pool)
    redis = Redis.from_url(settings.redis_url)
    bus = await Bus.connect(
        settings.nats_url, producer=f"reconciler/{settings.instance_id}", update_streams=False
    )
    reconciler = Reconciler(
        NatsInventory(bus.nc, settings.inventory_timeout),
        ReconcilerStore(pool),
        bus,
        Graces(
            orphan=timedelta(seconds=settings.orphan_grace),
            ghost=timedelta(seconds=settings.ghost_grace),
            stuck_launch=timedelta(seconds=settings.stuck_launch),
            give_up_launch=timedelta(seconds=settings.give_up_launch),
        ),
    )
    ttl = max(3 * settings.reconcile_interval, 30)
    loop = Loop(
        "reconcile",
        reconciler.due,
        reconciler.reconcile,
        interval=settings.reconcile_interval,
        lease=RedisLease(redis, "reconcile", ttl_seconds=ttl),
    )
    try:
        await serve([loop])
    finally:
        await bus.close()
        await close_scripts(redis)
        await redis.aclose()
        await pool.close()
