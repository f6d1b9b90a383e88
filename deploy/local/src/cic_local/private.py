"""Throwaway NATS, Redis and PostgreSQL servers on free ports, each owned by one test session
or benchmark, which may stop, restart, freeze and thaw them at will: unlike the servers
``infra`` reuses, nobody else is connected to them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Self

from cic_local.embedded import (
    PortTaken,
    free_port,
    postgres_data_dir,
    start_nats,
    start_postgres,
    start_redis,
    stop_pid,
)

__all__ = ["PrivateNats", "PrivatePostgres", "PrivateRedis", "PrivateServer"]

Starter = Callable[[Path, int, Path], subprocess.Popen[bytes]]


class PrivateServer:
    """One server process on a free port, its data under a work directory of its own."""

    scheme = ""
    userinfo = ""

    def __init__(self, workdir: Path, start: Starter, data: Path | None = None) -> None:
        self._dir = workdir
        self._data = data or workdir / "data"
        self._start = start
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        user = f"{self.userinfo}@" if self.userinfo else ""
        return f"{self.scheme}://{user}127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        """Start on a free port, or on the same one again after a ``stop`` (raising
        ``PortTaken`` if another process took it meanwhile); return once it accepts
        connections."""
        if self._proc is not None:
            return
        if self.port:  # again: on its port, or not at all (clients know no other)
            self._proc = self._start(self._data, self.port, self._dir / "server.log")
            return
        for attempt in range(3):
            self.port = free_port()
            try:
                self._proc = self._start(self._data, self.port, self._dir / "server.log")
                return
            except PortTaken:
                if attempt == 2:
                    raise

    def stop(self) -> None:
        """Terminate the server and wait for it; idempotent. Its data stays."""
        if self._proc is not None:
            self.resume()  # a stopped process would not act on SIGTERM until SIGKILL
            stop_pid(self._proc.pid)
            self._proc = None

    def restart(self) -> None:
        """Stop the server and start it again on the same port and data: clients
        reconnect, and whatever the server keeps on disk is there again."""
        if self._proc is None:
            return
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would; ``start`` brings it back."""
        if self._proc is not None:
            self.resume()
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
            self._proc = None

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): clients see it hang, as on a network partition."""
        if self._proc is not None:
            os.kill(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None:
            os.kill(self._proc.pid, signal.SIGCONT)

    def purge(self) -> None:
        """Stop the server and delete its data."""
        self.stop()
        shutil.rmtree(self._data, ignore_errors=True)

    @contextlib.contextmanager
    def running(self) -> Iterator[Self]:
        """Started for the block, then stopped and its data deleted."""
        self.start()
        try:
            yield self
        finally:
            self.purge()


class PrivateNats(PrivateServer):
    """nats-server with JetStream storing in files under the work directory."""

    scheme = "nats"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, start_nats, workdir)


class PrivateRedis(PrivateServer):
    """valkey-server without persistence: a restart loses everything it held."""

    scheme = "redis"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, start_redis)


class PrivatePostgres(PrivateServer):
    """A PostgreSQL cluster of its own (superuser ``postgres``, trust auth); ``url`` is the
    server-level DSN, without a database."""

    scheme = "postgresql"
    userinfo = "postgres"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, start_postgres, postgres_data_dir(workdir))

    def stop(self) -> None:
        """A fast shutdown (SIGINT): sessions are ended and everything committed is on
        disk; SIGTERM would wait for every pooled session to leave first."""
        if self._proc is not None:
            self.resume()
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGINT)
        super().stop()
