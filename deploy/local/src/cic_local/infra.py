"""NATS, PostgreSQL and Redis for the local platform and the tests: reuse what answers,
start embedded servers for what does not, and stop exactly what was started.

Embedded servers are recorded under ``state_dir/infra``: ``<name>.pid``, ``<name>.port``,
``<name>.log`` and the data in ``<name>/``.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from cic_local.embedded import (
    PortTaken,
    free_port,
    port_free,
    port_open,
    postgres_data_dir,
    runs,
    start_nats,
    start_postgres,
    start_redis,
    stop_pid,
)
from cic_local.private import PrivateNats

__all__ = [
    "Infra",
    "PrivateNats",
    "create_database",
    "drop_database",
    "ensure_infra",
    "free_port",
    "reachable",
    "stop_infra",
]

Starter = Callable[[Path, int, Path], subprocess.Popen[bytes]]


@dataclass(frozen=True)
class _Service:
    name: str
    default_port: int
    program: str
    """The executable's file name, which identifies a recorded pid as ours."""
    start: Starter


_SERVICES = {
    "nats": _Service("nats", 4222, "nats-server", start_nats),
    "postgres": _Service("postgres", 5432, "postgres", start_postgres),
    "redis": _Service("redis", 6379, "valkey-server", start_redis),
}


@dataclass(frozen=True)
class Infra:
    nats_url: str
    postgres_url: str
    """Server-level DSN, without a database."""
    redis_url: str
    started: tuple[str, ...]
    """The embedded servers this call started."""


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def reachable(url: str, timeout: float = 0.5) -> bool:
    """True when the URL's host and port accept a TCP connection."""
    host, port = _host_port(url, 0)
    return port != 0 and port_open(host, port, timeout)


def _with_port(url: str, port: int) -> str:
    """``url``'s scheme and user on 127.0.0.1:``port``, without path or query."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    return f"{parts.scheme}://{userinfo + '@' if userinfo else ''}127.0.0.1:{port}"


def _recorded(infra: Path, service: _Service) -> int | None:
    """The port of the embedded server recorded for ``service`` while it runs and answers."""
    try:
        pid = int((infra / f"{service.name}.pid").read_text())
        port = int((infra / f"{service.name}.port").read_text())
    except (OSError, ValueError):
        return None
    return port if runs(pid, service.program) and port_open("127.0.0.1", port) else None


@contextlib.contextmanager
def _locked(infra: Path) -> Iterator[None]:
    """One process at a time starts servers for a state directory."""
    infra.mkdir(parents=True, exist_ok=True)
    with (infra / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _data_dir(state_dir: Path, name: str) -> Path:
    link = state_dir / "infra" / name
    if name != "postgres":
        return link
    data = postgres_data_dir(state_dir)
    if data != link.resolve() and not (link.exists() or link.is_symlink()):
        link.symlink_to(data, target_is_directory=True)
    return data


def _start(state_dir: Path, service: _Service, url: str) -> int:
    """Start ``service`` on the URL's port if free, else on a free one; the port."""
    infra = state_dir / "infra"
    _, wanted = _host_port(url, service.default_port)
    port = wanted if wanted >= 1024 and port_free(wanted) else free_port()
    data = _data_dir(state_dir, service.name)
    for attempt in range(3):
        try:
            proc = service.start(data, port, infra / f"{service.name}.log")
            break
        except PortTaken:  # someone took the port between our look and the server's bind
            if attempt == 2:
                raise
            port = free_port()
    (infra / f"{service.name}.pid").write_text(f"{proc.pid}\n")
    (infra / f"{service.name}.port").write_text(f"{port}\n")
    return port


def ensure_infra(state_dir: Path, *, nats_url: str, postgres_url: str, redis_url: str) -> Infra:
    """For each server: the embedded one recorded under ``state_dir/infra`` while it runs,
    else the URL given if it answers, else a newly started embedded one. Idempotent.

    Raises:
        RuntimeError: an embedded server did not start; the message holds its log's tail.
    """
    infra = state_dir / "infra"
    urls = {"nats": nats_url, "postgres": postgres_url, "redis": redis_url}
    started: list[str] = []
    for name, url in urls.items():
        service = _SERVICES[name]
        port = _recorded(infra, service)
        if port is None and reachable(url):
            continue
        if port is None:
            with _locked(infra):
                port = _recorded(infra, service)  # a concurrent call may have started it
                if port is None:
                    port = _start(state_dir, service, url)
                    started.append(name)
        urls[name] = _with_port(url, port)
    return Infra(urls["nats"], urls["postgres"], urls["redis"], tuple(started))


def stop_infra(state_dir: Path, *, purge: bool = False) -> list[str]:
    """Stop every embedded server recorded under ``state_dir/infra`` and forget it; the names
    of those that were running. Safe to call twice. With ``purge`` their data goes too."""
    infra = state_dir / "infra"
    stopped = []
    for pid_file in sorted(infra.glob("*.pid")):
        service = _SERVICES.get(pid_file.stem)
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text())
            if service is not None and runs(pid, service.program):
                stop_pid(pid)
                stopped.append(service.name)
        pid_file.unlink(missing_ok=True)
    if purge:
        link = infra / "postgres"
        if link.is_symlink():  # the cluster lives elsewhere; see postgres_data_dir
            shutil.rmtree(link.resolve(), ignore_errors=True)
        shutil.rmtree(infra, ignore_errors=True)
    return stopped


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _dsn(postgres_url: str, database: str) -> str:
    return f"{postgres_url.rstrip('/')}/{database}"


async def create_database(postgres_url: str, name: str) -> str:
    """Create database ``name`` unless it exists; its DSN."""
    conn = await asyncpg.connect(_dsn(postgres_url, "postgres"))
    try:
        exists = await conn.fetchval("SELECT true FROM pg_database WHERE datname = $1", name)
        if not exists:
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):  # created meanwhile
                await conn.execute(f"CREATE DATABASE {_quoted(name)}")
    finally:
        await conn.close()
    return _dsn(postgres_url, name)


async def drop_database(postgres_url: str, name: str) -> None:
    """Drop database ``name``, disconnecting its sessions; a missing one is fine."""
    conn = await asyncpg.connect(_dsn(postgres_url, "postgres"))
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {_quoted(name)} WITH (FORCE)")
    finally:
        await conn.close()
