"""The reconciler's records on real PostgreSQL: a stuck launch is reissued as the
scheduler sent it, and each pass's report is kept where the admin API reads it."""

from __future__ import annotations

from datetime import UTC, datetime

from cic_common.db import create_pool, migrate
from cic_reconciler.adapters.sources import ReconcilerStore
from cic_reconciler.entrypoints.reconcile import PassReport


async def test_launch_commands_and_reports_round_trip(database: str) -> None:
    pool = await create_pool(database)
    await migrate(pool)
    try:
        await pool.execute(
            "INSERT INTO deployments (id, name, model, replicas) VALUES"
            " ('drec', 'rec', 'rmodel', 1) ON CONFLICT DO NOTHING"
        )
        await pool.execute(
            "INSERT INTO nodes (id, deployment_id, generation, status, spec, backend) VALUES"
            " ('nrecstuck', 'drec', 3, 'launching', $1, 'local'),"
            " ('nrecdone', 'drec', 3, 'active', $1, 'local')",
            {"model": "rmodel", "engine": "sim"},
        )
        store = ReconcilerStore(pool)
        command = await store.launch_command("nrecstuck")
        assert command is not None
        assert (command.deployment_id, command.generation, command.spec.model) == (
            "drec", 3, "rmodel",
        )  # fmt: skip
        assert await store.launch_command("nrecdone") is None

        report = PassReport(at=datetime.now(UTC), clusters=2, orphans=["cic-x-o"],
                            lost=["nrecdone"], retried=["nrecstuck"])  # fmt: skip
        await store.save_report(report)
        row = await pool.fetchrow("SELECT * FROM reconcile_reports ORDER BY id DESC LIMIT 1")
        assert (row["clusters"], row["orphans"], row["lost"], row["retried"]) == (
            2, ["cic-x-o"], ["nrecdone"], ["nrecstuck"],
        )  # fmt: skip
    finally:
        await pool.close()
