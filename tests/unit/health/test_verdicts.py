"""The health decision matrix: one row per branch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cic_common.lifecycle import NodeStatus
from cic_health.domain.verdicts import (
    HealthPolicy,
    NodeFacts,
    Verdict,
    judge,
    next_status,
    plainly_healthy,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = HealthPolicy(late_after=timedelta(seconds=30), dead_after=timedelta(seconds=120))
S = NodeStatus


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def facts(
    status: NodeStatus = S.ACTIVE,
    beat: float | None = 5,
    engine: str | None = "ready",
    ready: float | None = 600,
    since: float = 600,
    fails: int = 0,
    oks: int = 0,
) -> NodeFacts:
    return NodeFacts(
        status=status,
        last_heartbeat=None if beat is None else ago(beat),
        engine_state=engine,
        ready_at=None if ready is None else ago(ready),
        status_since=ago(since),
        poll_failures=fails,
        poll_successes=oks,
    )


@pytest.mark.parametrize(
    ("node", "verdict"),
    [
        pytest.param(facts(), Verdict.HEALTHY, id="fresh-heartbeat-ready-engine"),
        pytest.param(facts(beat=31), Verdict.UNHEALTHY, id="late-heartbeat"),
        pytest.param(facts(beat=None, ready=10), Verdict.HEALTHY, id="just-ready-no-beat-yet"),
        pytest.param(facts(beat=None, ready=None), Verdict.UNHEALTHY, id="no-sign-of-life"),
        pytest.param(facts(engine="restarting"), Verdict.UNHEALTHY, id="engine-restarting"),
        pytest.param(
            facts(S.INITIALIZING, beat=3, engine="starting", ready=1),
            Verdict.HEALTHY,
            id="a-beat-from-before-node-ready-is-not-its-engine-now",
        ),
        pytest.param(
            facts(beat=1, engine="starting", ready=3),
            Verdict.UNHEALTHY,
            id="a-beat-after-node-ready-is",
        ),
        pytest.param(facts(engine="failed"), Verdict.UNHEALTHY, id="engine-crash-loop"),
        pytest.param(
            facts(S.UNHEALTHY, beat=200, since=121), Verdict.DEAD, id="unhealthy-too-long"
        ),
        pytest.param(
            facts(S.UNHEALTHY, beat=200, since=60), Verdict.UNHEALTHY, id="unhealthy-not-yet-dead"
        ),
        pytest.param(facts(S.UNHEALTHY, beat=2, since=500, oks=2), Verdict.HEALTHY, id="recovered"),
        pytest.param(
            facts(S.UNHEALTHY, beat=2, since=60),
            Verdict.UNHEALTHY,
            id="beats-without-a-poll-streak-do-not-recover",
        ),
        pytest.param(
            facts(S.UNHEALTHY, beat=2, since=121),
            Verdict.DEAD,
            id="beats-without-a-poll-streak-do-not-keep-it-alive",
        ),
        pytest.param(facts(fails=3), Verdict.UNHEALTHY, id="agent-beats-but-engine-hangs"),
        pytest.param(facts(fails=2), Verdict.HEALTHY, id="two-failed-polls-are-a-blip"),
        pytest.param(facts(beat=40, oks=5), Verdict.DEGRADED, id="agent-silent-engine-serves"),
        pytest.param(facts(beat=121, oks=5), Verdict.DEAD, id="agent-silent-too-long"),
        pytest.param(facts(beat=40, fails=3), Verdict.UNHEALTHY, id="both-signals-bad"),
        pytest.param(
            facts(S.UNHEALTHY, beat=2, since=60, oks=1),
            Verdict.UNHEALTHY,
            id="one-good-poll-does-not-recover",
        ),
        pytest.param(
            facts(S.UNHEALTHY, beat=2, since=60, oks=2),
            Verdict.HEALTHY,
            id="two-good-polls-recover",
        ),
    ],
)
def test_judge(node: NodeFacts, verdict: Verdict) -> None:
    assert judge(node, NOW, POLICY) is verdict


@pytest.mark.parametrize(
    ("status", "verdict", "target"),
    [
        (S.ACTIVE, Verdict.HEALTHY, None),
        (S.ACTIVE, Verdict.UNHEALTHY, S.UNHEALTHY),
        (S.ACTIVE, Verdict.DEAD, S.DEAD),
        (S.ACTIVE, Verdict.DEGRADED, None),
        (S.UNHEALTHY, Verdict.DEGRADED, S.ACTIVE),
        (S.UNHEALTHY, Verdict.HEALTHY, S.ACTIVE),
        (S.UNHEALTHY, Verdict.UNHEALTHY, None),
        (S.UNHEALTHY, Verdict.DEAD, S.DEAD),
    ],
)
def test_verdicts_move_nodes_along_the_lifecycle(
    status: NodeStatus, verdict: Verdict, target: NodeStatus | None
) -> None:
    assert next_status(status, verdict) == target


@pytest.mark.parametrize("status", list(S))
@pytest.mark.parametrize("beat", [None, 0, 29, 30, 31, 200])
@pytest.mark.parametrize("engine", [None, "ready", "starting", "failed"])
@pytest.mark.parametrize("fails", [0, 2, 3])
@pytest.mark.parametrize("oks", [0, 1, 2])
def test_the_plainly_healthy_shortcut_never_disagrees_with_judge(
    status: NodeStatus, beat: float | None, engine: str | None, fails: int, oks: int
) -> None:
    full = facts(status=status, beat=beat, engine=engine, fails=fails, oks=oks)
    if plainly_healthy(status, beat, engine, fails, POLICY):
        assert judge(full, NOW, POLICY) is Verdict.HEALTHY
        assert next_status(status, Verdict.HEALTHY) is None


def test_the_shortcut_takes_the_common_case() -> None:
    assert plainly_healthy(S.ACTIVE, 4.0, "ready", 0, POLICY)
    assert not plainly_healthy(S.UNHEALTHY, 4.0, "ready", 0, POLICY)  # needs good polls
    assert not plainly_healthy(S.ACTIVE, 31.0, "ready", 0, POLICY)
