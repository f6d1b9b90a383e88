"""NATS, PostgreSQL and Redis for the local platform and the tests: reuse what answers,
start embedded servers for what does not, and stop exactly what was started."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
from cic_common.processes import alive

from cic_local.embedded import (
    free_port,
    port_open,
    postgres_data_dir,
    start_nats,
    start_postgres,
    start_redis,
    stop_pid,
)

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
    host, port = _host_port(url, 0)
    return port_open(host, port, timeout)


def _with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0] + "@" if len(netloc) == 2 else ""
    return f"{parts.scheme}://{userinfo}127.0.0.1:{port}"


def _ensure_one(
    name: str, url: str, default_port: int, state_dir: Path, start: Starter
) -> tuple[str, bool]:
    """The URL to use for ``name`` and whether an embedded server was started for it."""
    infra = state_dir / "infra"
    pid_file, port_file = infra / f"{name}.pid", infra / f"{name}.port"
    with contextlib.suppress(OSError, ValueError):
        pid, port = int(pid_file.read_text()), int(port_file.read_text())
        if alive(pid) and port_open("127.0.0.1", port):
            return _with_port(url, port), False
    if reachable(url):
        return url, False
    _, wanted = _host_port(url, default_port)
    port = wanted if not port_open("127.0.0.1", wanted, 0.2) else free_port()
    infra.mkdir(parents=True, exist_ok=True)
    data = infra / name if name != "postgres" else state_dir
    proc = start(data, port, infra / f"{name}.log")
    pid_file.write_text(str(proc.pid))
    port_file.write_text(str(port))
    return _with_port(url, port), True


def ensure_infra(state_dir: Path, *, nats_url: str, postgres_url: str, redis_url: str) -> Infra:
    """Reuse each server that answers at its URL (or that an earlier call started);
    start an embedded one otherwise, recorded under ``state_dir/infra``. Idempotent.

    Raises:
        RuntimeError: an embedded server did not start; the message holds its log.
    """
    started = []
    urls = {}
    for name, url, port, start in (
        ("nats", nats_url, 4222, start_nats),
        ("postgres", postgres_url, 5432, start_postgres),
        ("redis", redis_url, 6379, start_redis),
    ):
        urls[name], new = _ensure_one(name, url, port, state_dir, start)
        if new:
            started.append(name)
    return Infra(urls["nats"], urls["postgres"], urls["redis"], tuple(started))


def stop_infra(state_dir: Path, *, purge: bool = False) -> list[str]:
    """Stop every embedded server recorded under ``state_dir``; their names. Safe twice.
    With ``purge`` their data goes too."""
    stopped = []
    for pid_file in sorted((state_dir / "infra").glob("*.pid")):
        with contextlib.suppress(ValueError, OSError):
            pid = int(pid_file.read_text())
            if alive(pid):
                stop_pid(pid)
                stopped.append(pid_file.stem)
        pid_file.unlink(missing_ok=True)
    if purge:
        shutil.rmtree(state_dir / "infra", ignore_errors=True)
        shutil.rmtree(postgres_data_dir(state_dir), ignore_errors=True)
    return stopped


class PrivateNats:
    """A throwaway JetStream server on a free port, for one test session."""

    def __init__(self, workdir: Path) -> None:
        self._dir = workdir
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        self.port = free_port()
        self._proc = start_nats(self._dir / "data", self.port, self._dir / "nats.log")

    def stop(self) -> None:
        if self._proc is not None:
            stop_pid(self._proc.pid)
            self._proc = None


async def create_database(postgres_url: str, name: str) -> str:
    """Create ``name`` unless it exists; the DSN of the new database."""
    conn = await asyncpg.connect(f"{postgres_url}/postgres")
    try:
        exists = await conn.fetchval("SELECT true FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"{postgres_url}/{name}"


async def drop_database(postgres_url: str, name: str) -> None:
    conn = await asyncpg.connect(f"{postgres_url}/postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
