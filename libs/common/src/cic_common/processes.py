"""Looking at local processes by pid, safely against zombies and pid reuse."""

from __future__ import annotations

from pathlib import Path

__all__ = ["alive", "carries_env"]


def alive(pid: int) -> bool:
    """True for a running process; a zombie (exited, not yet reaped) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def carries_env(pid: int, name: str, value: str) -> bool:
    """True when the live process ``pid`` was started with ``name=value`` in its
    environment: a recorded pid that the kernel has since given to another program
    does not match."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{name}={value}".encode() in environ.split(b"\0") and alive(pid)
