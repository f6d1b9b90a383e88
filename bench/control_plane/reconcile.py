"""One reconciler pass against an inventory as large as the fleet, on the real store."""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta

import asyncpg
from cic_common.bus import Bus
from cic_common.db import create_pool
from cic_reconciler.adapters.sources import ReconcilerStore
from cic_reconciler.domain.diff import Graces, SeenCluster
from cic_reconciler.entrypoints.reconcile import Reconciler

__all__ = ["reconcile_pass"]


class FullInventory:
    """Every node's cluster, as the provisioner would report it: the inventory call
    itself is SkyPilot's (``sky status``), outside what this measures."""

    def __init__(self, clusters: list[SeenCluster]) -> None:
        self._clusters = clusters

    async def clusters(self) -> list[SeenCluster]:
        return self._clusters


async def reconcile_pass(dsn: str, nats_url: str, runs: int = 3) -> tuple[int, float, float]:
    """Clusters compared, the median seconds of a full pass, and of the bare read of
    the node table the pass starts from (the baseline)."""
    pool = await create_pool(dsn)
    bus = await Bus.connect(nats_url, producer="bench/reconciler")
    try:
        rows = await pool.fetch("SELECT id, cluster_name, launched_at FROM nodes")
        launched = datetime.now(UTC) - timedelta(hours=1)
        clusters = [SeenCluster(r["cluster_name"], r["id"], launched) for r in rows]
        reconciler = Reconciler(FullInventory(clusters), ReconcilerStore(pool), bus, Graces())
        passes, reads = [], []
        for _ in range(runs):
            started = time.perf_counter()
            await reconciler.reconcile(datetime.now(UTC))
            passes.append(time.perf_counter() - started)
            started = time.perf_counter()
            await _read(pool)
            reads.append(time.perf_counter() - started)
        report = reconciler.last_report
        if report is None or report.orphans or report.lost or report.retried:
            raise RuntimeError(f"the fleet and its inventory should agree: {report}")
        return len(clusters), statistics.median(passes), statistics.median(reads)
    finally:
        await bus.close()
        await pool.close()


async def _read(pool: asyncpg.Pool) -> None:
    await pool.fetch("SELECT id, status, launched_at, requested_at FROM nodes")
