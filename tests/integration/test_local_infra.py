"""Embedded servers for a machine that has none: started, reused, and stopped for real."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import nats
from cic_common.processes import alive
from cic_local.infra import (
    PrivateNats,
    create_database,
    drop_database,
    ensure_infra,
    free_port,
    stop_infra,
)
from conftest import Servers
from redis.asyncio import Redis


def recorded_pids(state: Path) -> dict[str, int]:
    return {p.stem: int(p.read_text()) for p in (state / "infra").glob("*.pid")}


async def test_missing_servers_are_started_embedded_reused_and_stopped(tmp_path: Path) -> None:
    state = tmp_path / "state"
    wanted = {
        "nats_url": f"nats://127.0.0.1:{free_port()}",
        "postgres_url": f"postgresql://postgres@127.0.0.1:{free_port()}",
        "redis_url": f"redis://127.0.0.1:{free_port()}",
    }
    try:
        infra = ensure_infra(state, **wanted)
        assert infra.started == ("nats", "postgres", "redis")
        pids = recorded_pids(state)
        assert all(alive(pid) for pid in pids.values())

        nc = await nats.connect(infra.nats_url)
        account = await nc.jetstream().account_info()
        await nc.close()
        assert account.limits is not None
        conn = await asyncpg.connect(f"{infra.postgres_url}/postgres")
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
        redis = Redis.from_url(infra.redis_url)
        assert await redis.ping()
        await redis.aclose()

        again = ensure_infra(state, **wanted)
        assert again.started == ()
        assert recorded_pids(state) == pids
    finally:
        stopped = stop_infra(state, purge=True)
    assert sorted(stopped) == ["nats", "postgres", "redis"]
    assert not any(alive(pid) for pid in pids.values())
    assert stop_infra(state) == []


async def test_reachable_servers_are_used_as_they_are(tmp_path: Path, servers: Servers) -> None:
    infra = ensure_infra(
        tmp_path,
        nats_url=servers.nats_url,
        postgres_url=servers.postgres_url,
        redis_url=servers.redis_url,
    )
    assert infra.started == ()
    assert infra.nats_url == servers.nats_url
    assert not (tmp_path / "infra").exists()


async def test_a_private_nats_stops_without_a_trace(tmp_path: Path) -> None:
    private = PrivateNats(tmp_path)
    private.start()
    pid = private.pid
    assert pid is not None
    try:
        nc = await nats.connect(private.url)
        await nc.jetstream().account_info()
        await nc.close()
    finally:
        private.stop()
    assert not alive(pid)


async def test_a_database_is_created_once_and_dropped(servers: Servers) -> None:
    dsn = await create_database(servers.postgres_url, "cic_infra_roundtrip")
    assert dsn == f"{servers.postgres_url}/cic_infra_roundtrip"
    assert await create_database(servers.postgres_url, "cic_infra_roundtrip") == dsn
    conn = await asyncpg.connect(dsn)
    await conn.close()
    await drop_database(servers.postgres_url, "cic_infra_roundtrip")
    admin = await asyncpg.connect(f"{servers.postgres_url}/postgres")
    gone = await admin.fetchval(
        "SELECT count(*) FROM pg_database WHERE datname = 'cic_infra_roundtrip'"
    )
    await admin.close()
    assert gone == 0
