"""PostgreSQL: the connection pool and the numbered migrations applied at start-up."""

from __future__ import annotations

import json
import logging
from importlib import resources
from typing import Any

import asyncpg

__all__ = ["UNAVAILABLE", "create_pool", "migrate", "migrations"]

log = logging.getLogger(__name__)
_LOCK_KEY = 0x0C1C_0001
"""Advisory lock held while migrating, so instances starting together take turns."""

UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,  # refused, reset, timed out
    asyncpg.InterfaceError,  # the connection closed under a query
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,  # shutting down, starting up, crashed
)
"""What a query raises while PostgreSQL cannot be reached, as opposed to what it refused."""


async def _init_connection(conn: Any) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections read and write JSON columns as Python values."""
    pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=_init_connection, command_timeout=30
    )
    assert pool is not None
    return pool


def migrations() -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` for every ``NNNN_name.sql`` shipped in this package."""
    found = []
    for entry in resources.files("cic_common.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version, _, name = entry.name.removesuffix(".sql").partition("_")
            found.append((int(version), name, entry.read_text()))
    return sorted(found)


async def migrate(pool: asyncpg.Pool) -> list[int]:
    """Apply the migrations not applied yet, in order; returns the versions applied.

    Each runs in its own transaction; concurrent callers wait on an advisory lock.
    """
    applied_now: list[int] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version int PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for version, name, sql in migrations():
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        version,
                        name,
                    )
                applied_now.append(version)
                log.info("migration applied", extra={"version": version, "migration": name})
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now
