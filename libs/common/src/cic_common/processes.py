"""Local processes and ports: by pid, safely against zombies and pid reuse."""

from __future__ import annotations

import socket
from pathlib import Path

__all__ = ["alive", "carries_env", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (free when asked, not reserved)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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
