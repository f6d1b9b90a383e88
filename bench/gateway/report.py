"""The results table and the goals, as markdown.

Added latency is each target's percentile less the direct path's, both measured paced at
the same offered rate; time-to-first-token overhead is measured against the direct path
alongside (see ``ttft``), so the direct row has no figure of its own there. Ratios are
against vLLM's router, measured in the same run.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from .load import WrkResult
from .ttft import Ttft, percentile

__all__ = [
    "CIC", "DIRECT", "LITELLM", "VLLM_ROUTER", "Row", "goals", "helper_lines", "table",
    "ttft_lines",
]  # fmt: skip

DIRECT, CIC, VLLM_ROUTER, LITELLM = "direct", "cic", "vllm-router", "litellm"


@dataclass
class Row:
    """One target's figures; ``skipped`` says why there are none."""

    key: str
    """``direct``, ``cic``, ``vllm-router`` or ``litellm``."""
    name: str
    peak: WrkResult | None = None
    cpu_ms: float | None = None
    """CPU milliseconds of the proxy's process tree per request at peak."""
    paced: WrkResult | None = None
    ttft: Ttft | None = None
    helper_ms: dict[str, float] = field(default_factory=dict)
    """CPU milliseconds per request at peak of the target's own infrastructure."""
    profile: Counter[tuple[str, ...]] | None = None
    """py-spy's samples of the target at peak (``--profile``, ours only)."""
    busy_after_s: float = 0.0
    """How long it kept working after the peak run (what it had queued)."""
    skipped: str = ""


def _number(value: float | None, digits: int = 2) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _by_key(rows: list[Row]) -> dict[str, Row]:
    return {row.key: row for row in rows if not row.skipped}


def table(rows: list[Row]) -> str:
    """The markdown table, one line per target, skipped ones with the reason."""
    found = _by_key(rows)
    router = found[VLLM_ROUTER].peak if VLLM_ROUTER in found else None
    base = found[DIRECT].paced if DIRECT in found else None
    lines = [
        "| target | peak RPS | RPS ratio vs vllm-router | added p50 ms | added p99 ms "
        "| CPU ms/request | TTFT added p99 ms | paced at req/s | failed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row.skipped or row.peak is None or row.paced is None:
            reason = " ".join(row.skipped.split()).replace("|", "/")
            lines.append(f"| {row.name} | skipped: {reason} | | | | | | | |")
            continue
        ratio = row.peak.rate / router.rate if router and router.rate else None
        if row.key == DIRECT:
            p50, p99 = f"base {row.paced.p50_ms:.2f}", f"base {row.paced.p99_ms:.2f}"
        elif base is not None:
            p50 = _number(row.paced.p50_ms - base.p50_ms)
            p99 = _number(row.paced.p99_ms - base.p99_ms)
        else:
            p50 = p99 = "—"
        failed = row.peak.failed + row.paced.failed + (row.ttft.failed if row.ttft else 0)
        lines.append(
            f"| {row.name} | {row.peak.rate:.0f} | {_number(ratio)} | {p50} | {p99} "
            f"| {_number(row.cpu_ms, 3)} | {_number(row.ttft.added(0.99) if row.ttft else None)} "
            f"| {row.paced.rate:.0f} | {failed} |"
        )
    return "\n".join(lines)


def helper_lines(rows: list[Row]) -> list[str]:
    """What a target's own infrastructure spent besides (CPU the table does not count),
    and how long it kept busy once the peak load stopped."""
    lines = [
        f"- {row.name}: besides, per request at peak, CPU ms of its "
        + ", ".join(f"{name} {ms:.3f}" for name, ms in row.helper_ms.items())
        for row in rows
        if row.helper_ms
    ]
    lines += [
        f"- {row.name} kept busy {row.busy_after_s:.1f} s after the peak run ended "
        "(working off a backlog; the paced run waited for it)"
        for row in rows
        if row.busy_after_s > 1
    ]
    return lines


def ttft_lines(rows: list[Row]) -> list[str]:
    """Each target's time to first token beside the direct one measured with it."""
    lines = []
    for row in rows:
        if row.ttft is None:
            continue
        t = row.ttft
        lines.append(
            f"- TTFT {row.name}: p50 {percentile(t.target, 0.5):.2f} ms, p99 "
            f"{percentile(t.target, 0.99):.2f} ms; direct alongside: p50 "
            f"{percentile(t.direct, 0.5):.2f} ms, p99 {percentile(t.direct, 0.99):.2f} ms "
            f"({len(t.target)} + {len(t.direct)} streams)"
        )
    return lines


def _check(what: str, value: float | None, goal: float, unit: str, at_least: bool) -> str:
    if value is None or math.isnan(value):
        return f"- {what}: not measured"
    met = value >= goal if at_least else value <= goal
    sign = "≥" if at_least else "≤"
    return f"- {what}: {value:.2f}{unit} (goal {sign} {goal:g}{unit}): {'met' if met else 'MISSED'}"


def goals(rows: list[Row]) -> list[str]:
    """Our gateway against its goals, for what this run measured."""
    found = _by_key(rows)
    cic = found.get(CIC)
    if cic is None or cic.peak is None or cic.paced is None:
        return ["- goals: cic-gateway not measured"]

    def ratio_to(key: str) -> float | None:
        other = found.get(key)
        return cic.peak.rate / other.peak.rate if cic.peak and other and other.peak else None

    base = found.get(DIRECT)
    added = (cic.paced.p50_ms - base.paced.p50_ms, cic.paced.p99_ms - base.paced.p99_ms) \
        if base and base.paced else (None, None)  # fmt: skip
    return [
        _check("peak RPS vs vllm-router", ratio_to(VLLM_ROUTER), 0.6, "x", True),
        _check("peak RPS vs LiteLLM", ratio_to(LITELLM), 20, "x", True),
        _check("added latency p50", added[0], 1, " ms", False),
        _check("added latency p99", added[1], 5, " ms", False),
        _check("TTFT overhead p99", cic.ttft.added(0.99) if cic.ttft else None, 2, " ms", False),
    ]
