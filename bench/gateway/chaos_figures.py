"""The chaos run's figures, from what the client saw of each request: which streams a
fault cut, which of those went on to the right end, and the table with its goals.

A stream is cut when its replica (the ``x-cic-replica`` header of its answer: the one
that began it) was killed or stopped while it was in flight: sent before the fault and
not over by then. It is resumed when it still ended with a finish reason and exactly the
text the same request gets, asked without streaming, from a healthy engine (the
simulator is deterministic, and a resumed stream continues word for word). A request is
failed when it raised, ended without a finish reason, or said anything else.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from .ttft import percentile

__all__ = [
    "Call", "ChaosFigures", "Fault", "busiest", "chaos_goals", "chaos_table", "figures", "is_cut",
]  # fmt: skip


@dataclass
class Call:
    """One request of the load, as the client saw it (times: ``time.monotonic()``)."""

    streamed: bool
    prompt: str
    max_tokens: int
    sent: float
    started: float | None = None
    """When its answer's headers came (None: none came)."""
    ended: float | None = None
    """When it was answered or failed; None: still waiting when the run gave up on it."""
    replica: str | None = None
    """The ``x-cic-replica`` header (None: no answer, or a proxy that does not say)."""
    text: str = ""
    finish_reason: str | None = None
    error: str | None = None

    def in_flight(self, at: float) -> bool:
        return self.sent < at and (self.ended is None or self.ended > at)

    def right(self, expected: Mapping[tuple[str, int], str]) -> bool:
        """Complete and correct: a finish reason, no error, the healthy engine's text."""
        return (
            self.error is None
            and self.ended is not None
            and self.finish_reason is not None
            and self.text == expected.get((self.prompt, self.max_tokens))
        )


@dataclass(frozen=True)
class Fault:
    replica: str
    signal: str
    """``SIGKILL`` or ``SIGSTOP``."""
    at: float


def is_cut(call: Call, faults: list[Fault]) -> bool:
    """Whether a fault struck the stream's replica while the stream was in flight."""
    return call.streamed and any(
        fault.replica == call.replica and call.in_flight(fault.at) for fault in faults
    )


def busiest(calls: list[Call], replicas: list[str], at: float) -> list[str]:
    """``replicas``, those with the most streams in flight at ``at`` first (ties: in the
    order given): the ones whose fault cuts the most streams."""
    load = Counter(call.replica for call in calls if call.streamed and call.in_flight(at))
    return sorted(replicas, key=lambda name: -load[name])


def _why(call: Call) -> str:
    if call.ended is None:
        return "still waiting at the end"
    if call.error is not None:
        return call.error.split(":", 1)[0]
    return "no finish reason" if call.finish_reason is None else "wrong text"


@dataclass
class ChaosFigures:
    """One target's chaos run, counted."""

    name: str
    sent: int = 0
    plain: int = 0
    plain_failed: int = 0
    streams: int = 0
    streams_started: int = 0
    streams_cut: int = 0
    streams_resumed: int = 0
    knows_cut: bool = True
    """False: the target does not say which replica served a stream (no cut counted)."""
    streams_failed: int = 0
    before_ms: list[float] = field(default_factory=list)
    """Latencies of the non-streamed requests answered before the first fault."""
    after_ms: list[float] = field(default_factory=list)
    """... and of the others (in flight at the first fault, or sent after it)."""
    failures: Counter[str] = field(default_factory=Counter)
    """Why requests failed: ``streamed``/``non-streamed`` and the exception's kind."""
    faults: list[Fault] = field(default_factory=list)
    struck: list[int] = field(default_factory=list)
    """How many streams each fault found in flight on its replica."""
    cut_ms: list[float] = field(default_factory=list)
    """How long the resumed streams took, request to end."""
    uncut_ms: list[float] = field(default_factory=list)
    """... and the streams that ended right and were not cut."""
    notes: list[str] = field(default_factory=list)
    skipped: str = ""


def figures(
    name: str, calls: list[Call], faults: list[Fault], expected: Mapping[tuple[str, int], str]
) -> ChaosFigures:
    """Count ``calls`` against ``faults``; ``expected``: (prompt, max_tokens) -> text."""
    first = min((fault.at for fault in faults), default=float("inf"))
    says_replica = any(call.replica is not None for call in calls if call.streamed)
    out = ChaosFigures(name, sent=len(calls), faults=faults, knows_cut=says_replica)
    out.struck = [sum(is_cut(call, [fault]) for call in calls) for fault in faults]
    for call in calls:
        ok = call.right(expected)
        if not ok:
            out.failures[f"{'streamed' if call.streamed else 'non-streamed'}: {_why(call)}"] += 1
        if not call.streamed:
            out.plain += 1
            out.plain_failed += not ok
            if ok and call.ended is not None:
                done_before = call.ended <= first
                (out.before_ms if done_before else out.after_ms).append(
                    1000 * (call.ended - call.sent)
                )
            continue
        out.streams += 1
        out.streams_started += call.started is not None
        out.streams_failed += not ok
        cut = is_cut(call, faults)
        out.streams_cut += cut
        out.streams_resumed += cut and ok
        if ok and call.ended is not None:
            (out.cut_ms if cut else out.uncut_ms).append(1000 * (call.ended - call.sent))
    return out


def _ms(values: list[float]) -> str:
    if not values:
        return "—"
    return f"{percentile(values, 0.5):.0f} / {percentile(values, 0.99):.0f} / {max(values):.0f}"


def chaos_table(runs: list[ChaosFigures]) -> str:
    lines = [
        "| target | requests sent | non-streamed | non-streamed failed | streams started "
        "| streams cut | cut streams resumed | streams failed "
        "| non-streamed p50 / p99 / max ms before faults | after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        if run.skipped:
            reason = " ".join(run.skipped.split()).replace("|", "/")
            lines.append(f"| {run.name} | skipped: {reason} | | | | | | | | |")
            continue
        cut = str(run.streams_cut) if run.knows_cut else "—"
        resumed = str(run.streams_resumed) if run.knows_cut else "—"
        lines.append(
            f"| {run.name} | {run.sent} | {run.plain} | {run.plain_failed} "
            f"| {run.streams_started} of {run.streams} | {cut} | {resumed} "
            f"| {run.streams_failed} | {_ms(run.before_ms)} | {_ms(run.after_ms)} |"
        )
    return "\n".join(lines)


def chaos_goals(run: ChaosFigures, *, ours: bool = True) -> list[str]:
    """What a run shows: for our gateway (``ours``), against its goals (no non-streamed
    request fails; every cut stream resumes); for a peer, its failures for contrast."""
    lines = []
    if ours:
        plain = "met" if run.plain_failed == 0 else "MISSED"
        lines.append(f"- {run.name}: non-streamed requests failed: {run.plain_failed} of "
                     f"{run.plain} (goal 0): {plain}")  # fmt: skip
        if run.streams_cut == 0:
            lines.append(f"- {run.name}: cut streams resumed: no stream was cut: not measured")
        else:
            share = 100 * run.streams_resumed / run.streams_cut
            met = "met" if run.streams_resumed == run.streams_cut else "MISSED"
            lines.append(f"- {run.name}: cut streams resumed: {run.streams_resumed} of "
                         f"{run.streams_cut}, {share:.0f}% (goal 100%): {met}")  # fmt: skip
    if run.faults:
        start = run.faults[0].at
        lines.append(f"- {run.name}: faults: " + ", ".join(
            f"{f.signal} {f.replica} at +{f.at - start:.3f} s"
            + (f" ({n} streams in flight on it)" if run.knows_cut else "")
            for f, n in zip(run.faults, run.struck, strict=False)
        ))  # fmt: skip
    if run.cut_ms:
        lines.append(f"- {run.name}: resumed streams took {min(run.cut_ms) / 1000:.2f} to "
                     f"{max(run.cut_ms) / 1000:.2f} s from request to end (the others: p50 "
                     f"{percentile(run.uncut_ms, 0.5) / 1000:.2f} s, p99 "
                     f"{percentile(run.uncut_ms, 0.99) / 1000:.2f} s)")  # fmt: skip
    lines += [f"- {run.name}: {note}" for note in run.notes]
    if run.failures:
        why = ", ".join(f"{kind} x {count}" for kind, count in sorted(run.failures.items()))
        lines.append(f"- {run.name}: failures: {why}")
    return lines
