"""Our gateway as a target: ``python -m cic_gateway`` with its whole request path on.

The gateway runs as in production, one process with its default settings, on real
infrastructure: a private JetStream server (usage events go nowhere near a running
platform's), a PostgreSQL database of its own (dropped at the end) and Redis database
11 (emptied first). Each request is authenticated (a user key created through the admin
API, looked up in PostgreSQL and cached), counted against the key's requests-per-minute
limit (one Redis script per request; the limit is set far above what the run can send,
so it never refuses) and metered (a ``usage-recorded`` event per request, stored by the
gateway's own consumer). It routes on the Redis replica table, which health writes in
production and this module writes directly, with the six engines of the run.

Metering costs more than the gateway's own CPU: each request is also a JetStream
publish, a delivery and an ack on the NATS server, and a row inserted by a PostgreSQL
backend. Those processes are named as the target's helpers, so their CPU per request is
reported beside the table (Redis is shared with other users and is not counted).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx
from cic_common.processes import free_port
from cic_common.replicas import Replica, ReplicaTable
from cic_gateway.domain.keys import generate_key
from cic_local.infra import PrivateNats, create_database, drop_database, ensure_infra
from redis.asyncio import Redis

from .procs import ServerFailed, serve, tail
from .targets import Backends, Target

__all__ = ["gateway"]

ROOT = Path(__file__).resolve().parents[2]
REDIS_DB = 11
DATABASE = f"cic_bench_gateway_{os.getpid()}"
RPM_LIMIT = 10_000_000
"""The highest limit a key may have: about 167,000 requests a second, never reached."""


async def _prepare(postgres_url: str, redis_url: str, backends: Backends) -> str:
    """A fresh database (its DSN) and a replica table listing the engines."""
    await drop_database(postgres_url, DATABASE)
    dsn = await create_database(postgres_url, DATABASE)
    redis = Redis.from_url(redis_url)
    try:
        await redis.flushdb()
        await ReplicaTable(redis).replace({
            model: [Replica(node_id=f"{model}-{i}", deployment_id="bench", model=model,
                            endpoint=url) for i, url in enumerate(urls)]
            for model, urls in backends.engines.items()
        })  # fmt: skip
    finally:
        await redis.aclose()
    return dsn


def _helpers(nats_pid: int | None, postgres_url: str, redis_url: str) -> dict[str, list[int]]:
    """The private nats-server, the PostgreSQL backends serving our database, and the
    Redis server (when it runs on this machine)."""

    async def backends() -> list[int]:
        conn = await asyncpg.connect(f"{postgres_url.rstrip('/')}/postgres")
        try:
            rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1",
                                    DATABASE)  # fmt: skip
        finally:
            await conn.close()
        return [row["pid"] for row in rows]

    async def redis_server() -> int:
        redis = Redis.from_url(redis_url)
        try:
            return int((await redis.info("server"))["process_id"])
        finally:
            await redis.aclose()

    redis = asyncio.run(redis_server())
    return {"nats-server": [nats_pid] if nats_pid else [], "PostgreSQL": asyncio.run(backends()),
            "Redis": [redis] if Path(f"/proc/{redis}").exists() else []}  # fmt: skip


def _user_key(base: str, admin_key: str, models: list[str]) -> str:
    """A user key with a limit that never bites, once the gateway routes every model."""
    admin = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=base, timeout=10) as http:
        limit = None if os.environ.get("CIC_BENCH_NO_RATE_LIMIT") else RPM_LIMIT
        created = http.post("/admin/keys", headers=admin,
                            json={"name": "bench", "rpm_limit": limit})  # fmt: skip
        if created.status_code != 201:
            raise RuntimeError(f"POST /admin/keys answered {created.status_code}: {created.text}")
        key: str = created.json()["key"]
        deadline = time.monotonic() + 30
        while True:
            listed = http.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
            if sorted(m["id"] for m in listed.json().get("data", [])) == sorted(models):
                return key
            if time.monotonic() > deadline:
                raise RuntimeError(f"the gateway does not route {models}: {listed.text}")
            time.sleep(0.2)


def _limit() -> str:
    return "no rate limit" if os.environ.get("CIC_BENCH_NO_RATE_LIMIT") else "rate limit"


@contextmanager
def gateway(
    backends: Backends, workdir: Path, *, env: Mapping[str, str] | None = None
) -> Iterator[Target]:
    """The gateway in front of ``backends`` until the end of the block (``env``: settings
    besides the run's own)."""
    nats = PrivateNats(workdir / "nats")
    nats.start()
    try:
        infra = ensure_infra(
            ROOT / ".cic", nats_url=nats.url,
            postgres_url=os.environ.get("CIC_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432"),
            redis_url=os.environ.get("CIC_REDIS_URL", "redis://127.0.0.1:6379"),
        )  # fmt: skip
        redis_url = f"{infra.redis_url.rstrip('/')}/{REDIS_DB}"
        dsn = asyncio.run(_prepare(infra.postgres_url, redis_url, backends))
        try:
            admin_key, _ = generate_key()
            port = free_port()
            workers = int(os.environ.get("CIC_WORKERS", "1"))
            base = f"http://127.0.0.1:{port}"
            settings = {"CIC_NATS_URL": nats.url, "CIC_POSTGRES_DSN": dsn,
                        "CIC_REDIS_URL": redis_url, "CIC_ADMIN_KEY": admin_key,
                        "CIC_PORT": str(port), "CIC_WORKERS": str(workers),
                        **(env or {})}  # fmt: skip
            argv = [sys.executable, "-m", "cic_gateway"]
            log = workdir / "cic-gateway.log"
            with serve(argv, f"{base}/healthz", log, env=settings) as pid:
                try:
                    key = _user_key(base, admin_key, list(backends.engines))
                except (RuntimeError, httpx.HTTPError) as exc:
                    raise ServerFailed(f"the gateway is not usable: {exc}", tail(log)) from exc
                yield Target(
                    "cic-gateway",
                    dict.fromkeys(backends.engines, base),
                    pid,
                    headers={"Authorization": f"Bearer {key}"},
                    note=f"auth, {_limit()}, metering on, {workers} worker"
                    + ("s" if workers > 1 else ""),
                    helpers=lambda: _helpers(nats.pid, infra.postgres_url, redis_url),
                )
        finally:
            asyncio.run(drop_database(infra.postgres_url, DATABASE))
    finally:
        nats.stop()
