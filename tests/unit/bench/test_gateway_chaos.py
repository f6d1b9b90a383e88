"""The chaos figures' pure part: which streams a fault cut, which resumed, and the goals."""

from __future__ import annotations

import pytest

from bench.gateway.chaos_figures import (
    Call,
    Fault,
    busiest,
    chaos_goals,
    chaos_table,
    figures,
    is_cut,
)

KILL = Fault("n1", "SIGKILL", at=10.0)
STOP = Fault("n2", "SIGSTOP", at=10.0)
EXPECTED = {("p", 40): "the whole answer ", ("p", 16): "short "}


def stream(replica: str | None, sent: float, ended: float | None, **kw: object) -> Call:
    defaults: dict[str, object] = {"text": "the whole answer ", "finish_reason": "length"}
    call = Call(True, "p", 40, sent, started=sent + 0.02, ended=ended, replica=replica)
    for name, value in {**defaults, **kw}.items():
        setattr(call, name, value)
    return call


def plain(sent: float, ended: float | None, **kw: object) -> Call:
    call = Call(False, "p", 16, sent, started=ended, ended=ended, replica="n3",
                text="short ", finish_reason="length")  # fmt: skip
    for name, value in kw.items():
        setattr(call, name, value)
    return call


def test_a_stream_is_cut_only_when_its_replica_faults_while_it_is_in_flight() -> None:
    faults = [KILL, STOP]
    assert is_cut(stream("n1", 9.5, 10.4), faults)  # killed mid-stream
    assert is_cut(stream("n2", 9.9, None), faults)  # stopped, and never ended
    assert not is_cut(stream("n1", 9.0, 9.9), faults)  # over before the kill
    assert not is_cut(stream("n2", 10.1, 10.6), faults)  # sent after the stop
    assert not is_cut(stream("n3", 9.5, 10.4), faults)  # a healthy replica's
    assert not is_cut(stream(None, 9.5, 10.4), faults)  # no replica named
    assert not is_cut(plain(9.5, 10.4, replica="n1"), faults)  # not a stream


def test_a_cut_stream_is_resumed_only_if_it_ends_with_the_uncut_text() -> None:
    calls = [
        stream("n1", 9.5, 10.6),  # resumed, word for word
        stream("n1", 9.6, 10.7, text="the whole answer the whole answer "),  # repeated
        stream("n2", 9.7, 15.0, finish_reason=None),  # ended without a finish reason
        stream("n2", 9.8, None, text="the"),  # still waiting at the end
        stream("n3", 9.5, 10.0),  # not cut, fine
        stream("n3", 11.0, 11.1, started=None, error="APIConnectionError: refused"),
    ]
    run = figures("gw", calls, [KILL, STOP], EXPECTED)
    assert (run.streams, run.streams_started) == (6, 5)
    assert (run.streams_cut, run.streams_resumed, run.streams_failed) == (4, 1, 4)
    assert run.struck == [2, 2]
    assert run.cut_ms == [pytest.approx(1100.0)]
    assert run.failures == {
        "streamed: wrong text": 1, "streamed: no finish reason": 1,
        "streamed: still waiting at the end": 1, "streamed: APIConnectionError": 1,
    }  # fmt: skip
    goals = "\n".join(chaos_goals(run))
    assert "cut streams resumed: 1 of 4, 25% (goal 100%): MISSED" in goals
    assert "non-streamed requests failed: 0 of 0 (goal 0): met" in goals


def test_non_streamed_failures_and_latency_before_and_after_the_first_fault() -> None:
    calls = [
        plain(1.0, 1.2),  # before
        plain(9.9, 10.1),  # in flight at the fault: after
        plain(11.0, 16.0),  # after, slow
        plain(12.0, 12.2, text="other "),  # a wrong answer fails
        plain(12.0, 12.1, error="InternalServerError: 503", finish_reason=None),
    ]
    run = figures("gw", calls, [KILL, STOP], EXPECTED)
    assert (run.plain, run.plain_failed) == (5, 2)
    assert run.before_ms == [pytest.approx(200.0)]
    assert sorted(run.after_ms) == [pytest.approx(200.0), pytest.approx(5000.0)]
    assert "| gw | 5 | 5 | 2 | 0 of 0 | — | — | 0 | 200 / 200 / 200 | 200 / 5000 / 5000 |" in (
        chaos_table([run])
    )
    assert "non-streamed requests failed: 2 of 5 (goal 0): MISSED" in "\n".join(chaos_goals(run))


def test_without_a_replica_header_cut_streams_are_not_known_and_not_claimed() -> None:
    calls = [stream(None, 9.5, 10.4), plain(1.0, 1.2, replica=None)]
    run = figures("router", calls, [KILL], EXPECTED)
    assert not run.knows_cut
    assert "| — | — |" in chaos_table([run])
    assert not any("goal" in line for line in chaos_goals(run, ours=False))


def test_the_fault_strikes_the_replicas_with_the_most_streams_in_flight_first() -> None:
    calls = [stream("b", 1.0, None), stream("b", 1.0, 3.0), stream("c", 1.0, 3.0),
             stream("a", 1.0, 1.5), plain(1.0, None, replica="a")]  # fmt: skip
    assert busiest(calls, ["a", "b", "c"], at=2.0) == ["b", "c", "a"]
    assert busiest([], ["a", "b", "c"], at=2.0) == ["a", "b", "c"]  # ties keep the order
