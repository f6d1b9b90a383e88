"""Servers as processes: start one, wait until it answers, stop it; and its CPU time.

Every server gets a process group of its own (``start_new_session``), so stopping it
takes its helpers too (LiteLLM's, say), and its output goes to a log file in the run's
work directory, whose tail is shown when it fails to start.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from cic_local.embedded import stop_pid

__all__ = [
    "PROXY_CORE",
    "ServerFailed",
    "isolate_self",
    "other_cores",
    "pin_proxy",
    "pin_tree",
    "serve",
    "settle",
    "tail",
    "tree_cpu_seconds",
    "usable_cores",
]

_TICKS = os.sysconf("SC_CLK_TCK")
PROXY_CORE = 0
"""With ``--isolate``: the proxy's core; the engines, wrk, the proxy's own servers and the
benchmark get the others, as when the proxy has a host of its own."""


_USABLE = frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else frozenset()


def usable_cores() -> set[int]:
    """The cores this process could run on when it started (a container may be given
    fewer than the machine has)."""
    return set(_USABLE)


def other_cores() -> set[int]:
    return usable_cores() - {PROXY_CORE}


def isolate_self() -> None:
    """This process (and whatever it starts) off the proxy's core; exits if there are
    not two cores to split."""
    if PROXY_CORE not in usable_cores() or not other_cores():
        raise SystemExit(f"--isolate needs core {PROXY_CORE} and another; this process "
                         f"may use {sorted(usable_cores())}")  # fmt: skip
    os.sched_setaffinity(0, other_cores())


def pin_proxy(pid: int) -> None:
    """The proxy ``pid`` (every thread of its tree) alone on the proxy's core."""
    if not pin_tree(pid, {PROXY_CORE}):
        raise RuntimeError(f"pid {pid} could not be pinned to core {PROXY_CORE}")


class ServerFailed(RuntimeError):
    """A server exited, did not answer in time, or answered wrong; ``tail`` holds the end
    of its log."""

    def __init__(self, message: str, tail: str) -> None:
        super().__init__(message)
        self.tail = tail


def _last_line(text: str) -> str:
    """What a crashed server said last: the error of a Python traceback, usually."""
    return text.strip().splitlines()[-1] if text.strip() else "(nothing logged)"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status < 500)
    except urllib.error.HTTPError as exc:
        return exc.code < 500  # it answers; a 401 or 404 is its business
    except (urllib.error.URLError, OSError):
        return False


def tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextmanager
def serve(
    argv: list[str],
    probe: str,
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 90.0,
) -> Iterator[int]:
    """Start ``argv``, yield its pid once ``probe`` answers, stop its group at the end.

    Raises:
        ServerFailed: it exited first, or ``probe`` did not answer within ``timeout``.
    """
    environment = {**os.environ, **(env or {})}
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                env=environment, start_new_session=True)  # fmt: skip
    name = Path(argv[0]).name if len(argv) < 3 or argv[1] != "-m" else argv[2]
    try:
        deadline = time.monotonic() + timeout
        while not _answers(probe):
            if proc.poll() is not None:
                said = tail(log)
                raise ServerFailed(f"{name} exited ({proc.returncode}): {_last_line(said)}", said)
            if time.monotonic() > deadline:
                raise ServerFailed(f"{name} did not answer {probe}", tail(log))
            time.sleep(0.2)
        yield proc.pid
    finally:
        stop_pid(proc.pid)
        proc.wait()


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None  # gone meanwhile


def _tree(pid: int) -> list[int]:
    """``pid`` and every live descendant."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat_fields(int(entry))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))  # fields[1]: ppid
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def pin_tree(pid: int, cores: set[int]) -> int:
    """Run every thread of ``pid`` and of its descendants on ``cores`` only (threads and
    processes started later inherit it); how many threads were pinned."""
    pinned = 0
    for process in _tree(pid):
        try:
            threads = [int(task) for task in os.listdir(f"/proc/{process}/task")]
        except OSError:
            continue  # gone meanwhile
        for thread in threads:
            try:
                os.sched_setaffinity(thread, cores)
                pinned += 1
            except OSError:
                continue
    return pinned


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and every live descendant, each with what its
    own exited children left it (``cutime``, ``cstime``): a proxy that runs worker
    processes is charged for them. Threads are included by the kernel already."""
    total = 0
    for process in _tree(pid):
        fields = _stat_fields(process)
        if fields is not None:
            total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / _TICKS


def settle(pids: list[int], *, idle: float = 0.05, window: float = 0.5, limit: float = 30) -> float:
    """Wait until ``pids`` together use less than ``idle`` of a core over ``window``
    seconds (a proxy may still be working off what it queued under load); the seconds
    waited, ``limit`` at most."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        before = sum(tree_cpu_seconds(pid) for pid in pids)
        time.sleep(window)
        if sum(tree_cpu_seconds(pid) for pid in pids) - before < idle * window:
            break
    return time.monotonic() - started
