"""Real infrastructure for the integration and end-to-end tests.

NATS is private to the test session (a throwaway JetStream server), PostgreSQL gets a
database of its own, and Redis a database index of its own; where no PostgreSQL or
Redis is reachable, embedded ones are started and stopped again at the end.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cic_common.bus import Bus
from cic_common.streams import STREAMS
from cic_gateway.domain.keys import generate_key
from cic_local.infra import (
    PrivateNats,
    create_database,
    drop_database,
    ensure_infra,
    free_port,
    stop_infra,
)
from cic_local.platform import SERVICES, Platform, ServiceSpec, stop_nodes
from redis.asyncio import Redis
from support import eventually

TEST_REDIS_DB = 13
"""Tests never touch the Redis database a local platform uses (0)."""


@dataclass(frozen=True)
class Servers:
    nats_url: str
    postgres_url: str
    redis_url: str


@pytest.fixture(scope="session")
def private_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateNats]:
    """The session's own JetStream server (a test may restart it)."""
    nats = PrivateNats(tmp_path_factory.mktemp("nats"))
    nats.start()
    try:
        yield nats
    finally:
        nats.stop()


@pytest.fixture(scope="session")
def servers(
    tmp_path_factory: pytest.TempPathFactory, private_nats: PrivateNats
) -> Iterator[Servers]:
    state = tmp_path_factory.mktemp("infra")
    nats = private_nats
    try:
        infra = ensure_infra(
            state,
            nats_url=nats.url,
            postgres_url=os.environ.get(
                "CIC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432"
            ),
            redis_url=os.environ.get("CIC_TEST_REDIS_URL", "redis://127.0.0.1:6379"),
        )
        redis_url = f"{infra.redis_url.rstrip('/')}/{TEST_REDIS_DB}"
        yield Servers(nats.url, infra.postgres_url, redis_url)
    finally:
        stop_infra(state, purge=True)


@pytest.fixture(scope="session")
async def database(servers: Servers) -> AsyncIterator[str]:
    """A fresh database for the session; its DSN."""
    name = f"cic_test_{secrets.token_hex(4)}"
    dsn = await create_database(servers.postgres_url, name)
    try:
        yield dsn
    finally:
        await drop_database(servers.postgres_url, name)


@pytest.fixture
def gateway_port() -> int:
    return free_port()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture
async def bus(servers: Servers) -> AsyncIterator[Bus]:
    """A bus on streams emptied of what earlier tests left."""
    bus = await Bus.connect(servers.nats_url, producer="test")
    for spec in STREAMS:
        await bus.js.purge_stream(spec.name)
        for info in await bus.js.consumers_info(spec.name):
            await bus.js.delete_consumer(spec.name, info.name)
    yield bus
    await bus.close()


@pytest.fixture
async def redis(servers: Servers) -> AsyncIterator[Redis]:
    """A client of the test Redis database, emptied of what earlier tests left."""
    client = Redis.from_url(servers.redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


@dataclass(frozen=True)
class Running:
    platform: Platform
    admin: httpx.AsyncClient
    base_url: str
    database: str


@pytest.fixture
def platform_env() -> dict[str, str]:
    """Settings the platform's services get besides (a test module may override this)."""
    return {}


@pytest.fixture
def platform_services() -> tuple[ServiceSpec, ...]:
    """The services the platform runs (a test module may override this)."""
    return SERVICES


@pytest.fixture
async def running(
    servers: Servers,
    state_dir: Path,
    gateway_port: int,
    bus: Bus,
    platform_env: dict[str, str],
    platform_services: tuple[ServiceSpec, ...],
) -> AsyncIterator[Running]:
    """The whole platform on a database of its own: what one end-to-end test leaves
    behind (deployments, nodes) never reaches the next."""
    name = f"cic_e2e_{secrets.token_hex(4)}"
    database = await create_database(servers.postgres_url, name)
    admin_key, _ = generate_key()
    platform = Platform(
        state_dir,
        {
            "CIC_NATS_URL": servers.nats_url,
            "CIC_POSTGRES_DSN": database,
            "CIC_REDIS_URL": servers.redis_url,
            "CIC_ADMIN_KEY": admin_key,
            "CIC_PORT": str(gateway_port),
            "CIC_LOG_LEVEL": "DEBUG",
            **platform_env,
        },
        platform_services,
    )
    base_url = f"http://127.0.0.1:{gateway_port}"
    platform.start()
    headers = {"Authorization": f"Bearer {admin_key}"}
    try:
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as admin:

            async def gateway_up() -> bool:
                try:
                    return (await admin.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(gateway_up)
            yield Running(platform, admin, base_url, database)
    finally:
        platform.stop()
        stop_nodes(state_dir)
        await drop_database(servers.postgres_url, name)
        for service in platform.running():
            print(f"--- {service}\n{platform.log_tail(service, 40)}")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The chaos suite's figures (``tests/chaos``), when it ran."""
    harness = sys.modules.get("chaos_harness")
    figures = getattr(harness, "FIGURES", None)
    if figures is not None and figures.scenarios:
        terminalreporter.write_sep("=", "chaos figures")
        terminalreporter.write_line(figures.table())
