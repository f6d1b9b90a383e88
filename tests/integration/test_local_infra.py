"""Embedded servers for a machine that has none: started, reused, and stopped for real."""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg
import nats
import pytest
from cic_local.infra import (
    PrivateNats,
    create_database,
    drop_database,
    ensure_infra,
    free_port,
    reachable,
    stop_infra,
)
from conftest import Servers
from redis.asyncio import Redis

MACHINE = {
    "nats_url": "nats://127.0.0.1:4222",
    "postgres_url": "postgresql://postgres@127.0.0.1:5432",
    "redis_url": "redis://127.0.0.1:6379",
}


def recorded_pids(state: Path) -> dict[str, int]:
    return {p.stem: int(p.read_text()) for p in (state / "infra").glob("*.pid")}


def assert_gone(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def assert_jetstream_answers(url: str) -> None:
    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        account = await nc.jetstream().account_info()
    finally:
        await nc.close()
    assert account.limits is not None


async def test_a_private_nats_serves_jetstream_and_stops_without_a_trace(tmp_path: Path) -> None:
    private = PrivateNats(tmp_path)
    try:
        private.start()
        pid = private.pid
        assert pid is not None
        await assert_jetstream_answers(private.url)
    finally:
        private.stop()
    assert_gone(pid)
    private.stop()


async def test_missing_servers_are_started_embedded_reused_and_stopped(tmp_path: Path) -> None:
    state = tmp_path / "state"
    wanted = {
        "nats_url": f"nats://127.0.0.1:{free_port()}",
        "postgres_url": f"postgresql://postgres@127.0.0.1:{free_port()}",
        "redis_url": f"redis://127.0.0.1:{free_port()}",
    }
    assert not any(reachable(url) for url in wanted.values())
    pids: dict[str, int] = {}
    try:
        infra = ensure_infra(state, **wanted)
        pids = recorded_pids(state)
        assert infra.started == ("nats", "postgres", "redis")
        assert sorted(pids) == ["nats", "postgres", "redis"]
        for name in pids:
            assert (state / "infra" / f"{name}.log").is_file()
            assert (state / "infra" / name).is_dir()

        await assert_jetstream_answers(infra.nats_url)
        conn = await asyncpg.connect(f"{infra.postgres_url}/postgres", timeout=10)
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()
        redis = Redis.from_url(infra.redis_url)
        try:
            assert await redis.ping()
        finally:
            await redis.aclose()

        again = ensure_infra(state, **wanted)
        assert again == ensure_infra(state, **wanted)
        assert again.started == ()
        assert (again.nats_url, again.postgres_url, again.redis_url) == (
            infra.nats_url,
            infra.postgres_url,
            infra.redis_url,
        )
        assert recorded_pids(state) == pids
    finally:
        stopped = stop_infra(state, purge=True)
    assert sorted(stopped) == ["nats", "postgres", "redis"]
    for pid in pids.values():
        assert_gone(pid)
    assert stop_infra(state) == []


@pytest.mark.skipif(
    not all(reachable(url) for url in MACHINE.values()),
    reason="this machine runs no NATS, PostgreSQL and Redis at 127.0.0.1:4222/5432/6379",
)
async def test_reachable_servers_are_used_as_they_are(tmp_path: Path) -> None:
    infra = ensure_infra(tmp_path, **MACHINE)
    try:
        assert infra.started == ()
        assert (infra.nats_url, infra.postgres_url, infra.redis_url) == tuple(MACHINE.values())
        assert not (tmp_path / "infra").exists()
    finally:
        stop_infra(tmp_path)


async def test_a_database_is_created_once_and_dropped(servers: Servers) -> None:
    name = f"cic_infra_roundtrip_{os.getpid()}"
    try:
        dsn = await create_database(servers.postgres_url, name)
        assert dsn == f"{servers.postgres_url}/{name}"
        assert await create_database(servers.postgres_url, name) == dsn
        conn = await asyncpg.connect(dsn, timeout=10)
        await conn.close()  # left open, it would be disconnected by the drop (FORCE)
    finally:
        await drop_database(servers.postgres_url, name)
    await drop_database(servers.postgres_url, name)
    admin = await asyncpg.connect(f"{servers.postgres_url}/postgres", timeout=10)
    try:
        gone = await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name)
    finally:
        await admin.close()
    assert gone == 0
