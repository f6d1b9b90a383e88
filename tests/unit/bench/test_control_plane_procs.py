"""The control-plane benchmark's reading of a process's CPU time and memory."""

from __future__ import annotations

import os

import pytest

from bench.control_plane.procs import usage


def test_usage_reads_cpu_time_and_resident_memory_of_a_live_process() -> None:
    before = usage(os.getpid())
    sum(i * i for i in range(2_000_000))  # burn some CPU
    after = usage(os.getpid())
    spent = after.since(before)
    assert spent.cpu_seconds > 0
    assert 0 <= spent.system_seconds <= spent.cpu_seconds
    assert 1 < after.rss_mb <= after.peak_mb


def test_usage_of_a_gone_process_raises() -> None:
    with pytest.raises(FileNotFoundError):
        usage(2**22 + 1)  # above the kernel's pid limit
