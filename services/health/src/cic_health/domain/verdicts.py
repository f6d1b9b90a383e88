"""The health decision: from the facts observed about a node to one verdict."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from cic_common.lifecycle import NodeStatus

__all__ = ["HealthPolicy", "NodeFacts", "Verdict", "judge", "next_status", "plainly_healthy"]


class Verdict(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    """The engine answers our polls but its agent is silent: still routable, but the
    node can no longer drain on a preemption notice, so it is replaced in time."""
    UNHEALTHY = "unhealthy"
    DEAD = "dead"


@dataclass(frozen=True)
class HealthPolicy:
    late_after: timedelta = timedelta(seconds=30)
    """No sign of life for this long: stop routing to the node."""
    dead_after: timedelta = timedelta(seconds=120)
    """Unhealthy for this long: give up on it so the scheduler replaces it."""
    poll_failures_to_fail: int = 3
    """Consecutive failed polls before the engine counts as down (a blip is not)."""
    poll_successes_to_recover: int = 2
    """Consecutive good polls before an unhealthy node is routed to again."""


@dataclass(frozen=True)
class NodeFacts:
    status: NodeStatus
    last_heartbeat: datetime | None
    engine_state: str | None
    ready_at: datetime | None
    status_since: datetime
    """When the node entered ``status``."""
    poll_failures: int = 0
    """Consecutive polls of the engine that failed (0 once one succeeds)."""
    poll_successes: int = 0
    """Consecutive polls that succeeded (0 once one fails)."""


def judge(facts: NodeFacts, now: datetime, policy: HealthPolicy) -> Verdict:
    """One verdict from both signals: the agent's heartbeats (push) and our own polls of
    the engine (pull).

    | heartbeat        | polls          | verdict                                  |
    |------------------|----------------|------------------------------------------|
    | on time, ready   | fine           | healthy (unhealthy ones need N good polls)|
    | on time, ready   | failing        | unhealthy: the engine hangs               |
    | late             | fine           | degraded; dead once silent `dead_after`   |
    | late             | failing/none   | unhealthy                                 |
    | unhealthy for `dead_after`        || dead                                     |

    The ``node-ready`` time counts as a sign of life, so a node is not judged late
    before its first heartbeat had time to arrive.
    """
    signs = [t for t in (facts.last_heartbeat, facts.ready_at) if t is not None]
    silent_for = now - max(signs) if signs else None
    # A beat sent before node-ready tells of an engine still starting: node-ready, newer,
    # says it is ready (judged between the two, the node would flap out and back).
    stale = (
        facts.last_heartbeat is not None
        and facts.ready_at is not None
        and facts.last_heartbeat < facts.ready_at
    )
    heartbeat_ok = (
        silent_for is not None
        and silent_for <= policy.late_after
        and (stale or facts.engine_state in (None, "ready"))
    )
    polls_fail = facts.poll_failures >= policy.poll_failures_to_fail
    polls_answer = facts.poll_successes > 0 and facts.poll_failures == 0
    if heartbeat_ok and not polls_fail:
        # Only good polls bring an unhealthy node back: its agent beats on through an
        # engine hang, and no streak (Redis lost it) is no sign that the engine answers.
        recovered = facts.poll_successes >= policy.poll_successes_to_recover
        if facts.status is not NodeStatus.UNHEALTHY or recovered:
            return Verdict.HEALTHY
    elif not heartbeat_ok and polls_answer:
        if silent_for is not None and silent_for >= policy.dead_after:
            return Verdict.DEAD
        return Verdict.DEGRADED
    if facts.status is NodeStatus.UNHEALTHY and now - facts.status_since >= policy.dead_after:
        return Verdict.DEAD
    return Verdict.UNHEALTHY


def plainly_healthy(
    status: NodeStatus,
    silent_for: float | None,
    engine_state: str | None,
    poll_failures: int,
    policy: HealthPolicy,
) -> bool:
    """Whether ``judge`` can only find an active node healthy, from the few facts that
    decide it (``silent_for``: seconds since its last heartbeat): it beat in time
    with its engine ready, and its polls are not failing. A pass over thousands of
    nodes, nearly all of them like that, judges the others in full."""
    return (
        status is NodeStatus.ACTIVE
        and silent_for is not None
        and silent_for <= policy.late_after.total_seconds()
        and engine_state == "ready"
        and poll_failures < policy.poll_failures_to_fail
    )


_MOVES: dict[tuple[NodeStatus, Verdict], NodeStatus] = {
    (NodeStatus.ACTIVE, Verdict.UNHEALTHY): NodeStatus.UNHEALTHY,
    (NodeStatus.ACTIVE, Verdict.DEAD): NodeStatus.DEAD,
    (NodeStatus.UNHEALTHY, Verdict.HEALTHY): NodeStatus.ACTIVE,
    (NodeStatus.UNHEALTHY, Verdict.DEGRADED): NodeStatus.ACTIVE,
    (NodeStatus.UNHEALTHY, Verdict.DEAD): NodeStatus.DEAD,
}


def next_status(status: NodeStatus, verdict: Verdict) -> NodeStatus | None:
    """The status a verdict moves a node to, or None when it stays where it is.

    Health judges only nodes that are serving or were: ``active`` and ``unhealthy``.
    A degraded node stays ``active`` (routable) until its agent has been silent for
    ``dead_after``.
    """
    return _MOVES.get((status, verdict))
