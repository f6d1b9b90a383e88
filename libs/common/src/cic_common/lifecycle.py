"""The node lifecycle: statuses, who may move a node where, and which count as live."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["LIVE", "TERMINAL", "TRANSITIONS", "NodeStatus", "allowed_from"]


class NodeStatus(StrEnum):
    REQUESTED = "requested"
    LAUNCHING = "launching"
    INITIALIZING = "initializing"
    ACTIVE = "active"
    UNHEALTHY = "unhealthy"
    DRAINING = "draining"
    DEAD = "dead"
    TERMINATED = "terminated"
    LAUNCH_FAILED = "launch_failed"
    LOST = "lost"


S = NodeStatus

TRANSITIONS: dict[NodeStatus, frozenset[NodeStatus]] = {
    # target: the statuses a node may be in to move there
    S.LAUNCHING: frozenset({S.REQUESTED}),
    S.INITIALIZING: frozenset({S.LAUNCHING}),
    S.LAUNCH_FAILED: frozenset({S.REQUESTED, S.LAUNCHING}),
    S.ACTIVE: frozenset({S.LAUNCHING, S.INITIALIZING, S.UNHEALTHY}),
    S.UNHEALTHY: frozenset({S.ACTIVE}),
    S.DEAD: frozenset({S.ACTIVE, S.UNHEALTHY, S.INITIALIZING}),
    S.DRAINING: frozenset({S.REQUESTED, S.LAUNCHING, S.INITIALIZING, S.ACTIVE, S.UNHEALTHY}),
    S.TERMINATED: frozenset(set(S) - {S.TERMINATED}),
    S.LOST: frozenset(
        {S.REQUESTED, S.LAUNCHING, S.INITIALIZING, S.ACTIVE, S.UNHEALTHY, S.DRAINING, S.DEAD}
    ),
}
"""Every edge of the lifecycle. A transition not listed here is refused (and is a no-op)."""

LIVE: frozenset[NodeStatus] = frozenset(
    {S.REQUESTED, S.LAUNCHING, S.INITIALIZING, S.ACTIVE, S.UNHEALTHY}
)
"""Statuses that count towards a deployment's replicas."""

TERMINAL: frozenset[NodeStatus] = frozenset({S.TERMINATED, S.LAUNCH_FAILED, S.LOST})
"""Statuses a node never leaves (``lost`` may still be confirmed ``terminated``)."""


def allowed_from(target: NodeStatus) -> list[str]:
    """The statuses from which ``target`` may be reached, as plain strings for SQL."""
    return sorted(s.value for s in TRANSITIONS[target])
