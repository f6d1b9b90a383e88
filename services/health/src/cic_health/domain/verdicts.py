"""The health decision: from the facts observed about a node to one verdict."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from cic_common.lifecycle import NodeStatus

__all__ = ["HealthPolicy", "NodeFacts", "Verdict", "judge", "next_status"]


class Verdict(StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    DEAD = "dead"


@dataclass(frozen=True)
class HealthPolicy:
    late_after: timedelta = timedelta(seconds=30)
    """No sign of life for this long: stop routing to the node."""
    dead_after: timedelta = timedelta(seconds=120)
    """Unhealthy for this long: give up on it so the scheduler replaces it."""


@dataclass(frozen=True)
class NodeFacts:
    status: NodeStatus
    last_heartbeat: datetime | None
    engine_state: str | None
    ready_at: datetime | None
    status_since: datetime
    """When the node entered ``status``."""


def judge(facts: NodeFacts, now: datetime, policy: HealthPolicy) -> Verdict:
    """Healthy while the agent heartbeats on time with a ready engine.

    The ``node-ready`` time counts as a sign of life, so a node is not judged late
    before its first heartbeat had time to arrive.
    """
    signs = [t for t in (facts.last_heartbeat, facts.ready_at) if t is not None]
    fresh = bool(signs) and now - max(signs) <= policy.late_after
    engine_ok = facts.engine_state in (None, "ready")
    if fresh and engine_ok:
        return Verdict.HEALTHY
    if facts.status is NodeStatus.UNHEALTHY and now - facts.status_since >= policy.dead_after:
        return Verdict.DEAD
    return Verdict.UNHEALTHY


_MOVES: dict[tuple[NodeStatus, Verdict], NodeStatus] = {
    (NodeStatus.ACTIVE, Verdict.UNHEALTHY): NodeStatus.UNHEALTHY,
    (NodeStatus.ACTIVE, Verdict.DEAD): NodeStatus.UNHEALTHY,
    (NodeStatus.UNHEALTHY, Verdict.HEALTHY): NodeStatus.ACTIVE,
    (NodeStatus.UNHEALTHY, Verdict.DEAD): NodeStatus.DEAD,
}


def next_status(status: NodeStatus, verdict: Verdict) -> NodeStatus | None:
    """The status a verdict moves a node to, or None when it stays where it is.

    Health judges only nodes that are serving or were: ``active`` and ``unhealthy``.
    An ``active`` node passes through ``unhealthy`` before it may be declared dead.
    """
    return _MOVES.get((status, verdict))
