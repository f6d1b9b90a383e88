"""Spot availability traces: one JSON file per zone, 1 while spot capacity is there.

The format is that of the public traces under ``spot-traces/availability``:
``{"metadata": {"gap_seconds": N}, "data": [0 | 1, ...]}``, sample ``i`` covering
``[i * N, (i + 1) * N)`` seconds; the zone is the file name before its first ``_``
(``us-east-1a_v100_1.json`` is ``us-east-1a``). A 0 means no spot capacity: every spot
replica in the zone is preempted, and a launch there is refused.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Traces", "ZoneTrace", "load_traces", "write_trace"]


@dataclass(frozen=True)
class ZoneTrace:
    """One zone's availability, with the times capacity drops precomputed."""

    zone: str
    gap: float
    data: tuple[int, ...]
    drops: tuple[float, ...] = field(init=False)
    """Start times of the samples where capacity goes from 1 (or the start) to 0."""

    def __post_init__(self) -> None:
        drops = tuple(
            i * self.gap
            for i, up in enumerate(self.data)
            if not up and (i == 0 or self.data[i - 1])
        )
        object.__setattr__(self, "drops", drops)

    @property
    def duration(self) -> float:
        return len(self.data) * self.gap

    def available(self, t: float) -> bool:
        """Spot capacity at ``t`` (past the end, the last sample holds)."""
        index = min(int(t // self.gap), len(self.data) - 1)
        return bool(self.data[max(0, index)])

    def next_drop(self, t: float) -> float:
        """The first time after ``t`` at which capacity is gone (``inf`` if never)."""
        k = bisect_right(self.drops, t)
        return self.drops[k] if k < len(self.drops) else math.inf

    @property
    def availability(self) -> float:
        return sum(self.data) / len(self.data) if self.data else 0.0


@dataclass(frozen=True)
class Traces:
    """The zones of one trace set, by name; they share one sampling step."""

    zones: dict[str, ZoneTrace]

    @property
    def names(self) -> list[str]:
        return sorted(self.zones)

    @property
    def duration(self) -> float:
        """Where every zone still has samples."""
        return min(z.duration for z in self.zones.values())

    @property
    def gap(self) -> float:
        return next(iter(self.zones.values())).gap

    def best_zone(self) -> str:
        """The zone with spot capacity most of the time (ties: by name)."""
        return max(self.names, key=lambda name: self.zones[name].availability)


def load_traces(directory: Path) -> Traces:
    """Every ``*.json`` trace in ``directory``; raises if there is none or steps differ."""
    zones: dict[str, ZoneTrace] = {}
    for path in sorted(directory.glob("*.json")):
        raw = json.loads(path.read_text())
        gap = float(raw["metadata"]["gap_seconds"])
        data = tuple(1 if int(v) else 0 for v in raw["data"])
        zone = path.name.split("_", 1)[0].removesuffix(".json")
        zones[zone] = ZoneTrace(zone, gap, data)
    if not zones:
        raise FileNotFoundError(f"no *.json traces in {directory}")
    if len({z.gap for z in zones.values()}) > 1:
        raise ValueError(f"traces in {directory} have different gap_seconds")
    return Traces(zones)


def write_trace(directory: Path, zone: str, data: Sequence[int], gap: float) -> Path:
    """Write one zone's trace in the public format (for tests and synthetic runs)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{zone}_v100_1.json"
    payload = {"metadata": {"gap_seconds": gap}, "data": list(data)}
    path.write_text(json.dumps(payload))
    return path
