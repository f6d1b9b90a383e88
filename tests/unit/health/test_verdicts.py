"""The health decision matrix: one row per branch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cic_common.lifecycle import NodeStatus
from cic_health.domain.verdicts import HealthPolicy, NodeFacts, Verdict, judge, next_status

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
) -> NodeFacts:
    return NodeFacts(
        status=status,
        last_heartbeat=None if beat is None else ago(beat),
        engine_state=engine,
        ready_at=None if ready is None else ago(ready),
        status_since=ago(since),
    )


@pytest.mark.parametrize(
    ("node", "verdict"),
    [
        pytest.param(facts(), Verdict.HEALTHY, id="fresh-heartbeat-ready-engine"),
        pytest.param(facts(beat=31), Verdict.UNHEALTHY, id="late-heartbeat"),
        pytest.param(facts(beat=None, ready=10), Verdict.HEALTHY, id="just-ready-no-beat-yet"),
        pytest.param(facts(beat=None, ready=None), Verdict.UNHEALTHY, id="no-sign-of-life"),
        pytest.param(facts(engine="restarting"), Verdict.UNHEALTHY, id="engine-restarting"),
        pytest.param(facts(engine="failed"), Verdict.UNHEALTHY, id="engine-crash-loop"),
        pytest.param(
            facts(S.UNHEALTHY, beat=200, since=121), Verdict.DEAD, id="unhealthy-too-long"
        ),
        pytest.param(
            facts(S.UNHEALTHY, beat=200, since=60), Verdict.UNHEALTHY, id="unhealthy-not-yet-dead"
        ),
        pytest.param(facts(S.UNHEALTHY, beat=2, since=500), Verdict.HEALTHY, id="recovered"),
    ],
)
def test_judge(node: NodeFacts, verdict: Verdict) -> None:
    assert judge(node, NOW, POLICY) is verdict


@pytest.mark.parametrize(
    ("status", "verdict", "target"),
    [
        (S.ACTIVE, Verdict.HEALTHY, None),
        (S.ACTIVE, Verdict.UNHEALTHY, S.UNHEALTHY),
        (S.ACTIVE, Verdict.DEAD, S.UNHEALTHY),
        (S.UNHEALTHY, Verdict.HEALTHY, S.ACTIVE),
        (S.UNHEALTHY, Verdict.UNHEALTHY, None),
        (S.UNHEALTHY, Verdict.DEAD, S.DEAD),
    ],
)
def test_an_active_node_passes_through_unhealthy_before_dead(
    status: NodeStatus, verdict: Verdict, target: NodeStatus | None
) -> None:
    assert next_status(status, verdict) == target
