"""A process's CPU time and memory, read from ``/proc`` (Linux)."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["Usage", "usage"]

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Usage:
    cpu_seconds: float
    """User + system time."""
    system_seconds: float
    """The kernel's share of it (sockets: on one machine, both ends of a loopback
    connection are partly charged to the process that sends)."""
    rss_mb: float
    peak_mb: float
    """The highest resident size seen (the kernel's high-water mark)."""

    def since(self, earlier: Usage, sampled_peak: float = 0.0) -> Usage:
        """CPU spent since ``earlier``; memory as now."""
        peak = max(self.peak_mb, sampled_peak)
        return Usage(self.cpu_seconds - earlier.cpu_seconds,
                     self.system_seconds - earlier.system_seconds, self.rss_mb, peak)  # fmt: skip


def usage(pid: int) -> Usage:
    """Raises ``OSError`` when ``pid`` is gone."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    user, system = int(fields[11]) / _TICKS, int(fields[12]) / _TICKS  # utime, stime
    memory: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                memory[key] = int(value.split()[0]) / 1024
    return Usage(user + system, system, memory.get("VmRSS", 0.0), memory.get("VmHWM", 0.0))
