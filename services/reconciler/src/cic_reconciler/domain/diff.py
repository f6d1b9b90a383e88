"""The reconcile diff: our node records against the clusters the backends report."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = [
    "Decision",
    "Graces",
    "KnownNode",
    "MarkLost",
    "RetryLaunch",
    "SeenCluster",
    "TerminateOrphan",
    "diff",
]

_EXPECT_CLUSTER = frozenset({"initializing", "active", "unhealthy", "draining", "dead"})
"""Statuses in which a node must exist at its backend. ``requested`` and ``launching``
may not have a cluster yet, and terminal nodes must not have one."""


@dataclass(frozen=True)
class KnownNode:
    id: str
    status: str
    launched_at: datetime | None
    requested_at: datetime | None = None


@dataclass(frozen=True)
class Graces:
    orphan: timedelta = timedelta(minutes=10)
    """A cluster younger than this may be a launch not yet recorded."""
    ghost: timedelta = timedelta(minutes=1)
    """A node launched less long ago may not be in the inventory yet."""
    stuck_launch: timedelta = timedelta(minutes=20)
    """A launch without an outcome for this long is sent again."""
    give_up_launch: timedelta = timedelta(hours=1)
    """...and given up (marked lost, so it is replaced) after this long."""


@dataclass(frozen=True)
class SeenCluster:
    name: str
    node_id: str
    launched_at: datetime


@dataclass(frozen=True)
class TerminateOrphan:
    """A cluster runs that no live node of ours owns: take it down."""

    node_id: str
    cluster_name: str


@dataclass(frozen=True)
class MarkLost:
    """A node of ours has no cluster any more (a ghost): the scheduler replaces it."""

    node_id: str
    reason: str = "cluster missing at its backend"


@dataclass(frozen=True)
class RetryLaunch:
    """A launch has had no outcome for too long: send the command again (the
    provisioner launches idempotently by node id)."""

    node_id: str


Decision = TerminateOrphan | MarkLost | RetryLaunch


def diff(
    nodes: list[KnownNode], clusters: list[SeenCluster], now: datetime, graces: Graces
) -> list[Decision]:
    """Decisions that bring the backends and our records back into agreement.

    Orphans (a cluster no live node owns, older than the orphan grace) are taken down;
    ghosts (a node that should have a cluster and has none, launched longer ago than
    the ghost grace) are lost; launches stuck in ``requested``/``launching`` are sent
    again, and given up as lost after ``give_up_launch``.
    """
    by_id = {n.id: n for n in nodes}
    seen = {c.node_id for c in clusters}
    decisions: list[Decision] = []
    for cluster in clusters:
        node = by_id.get(cluster.node_id)
        owned = node is not None and node.status not in ("terminated", "launch_failed", "lost")
        if not owned and now - cluster.launched_at >= graces.orphan:
            decisions.append(TerminateOrphan(cluster.node_id, cluster.name))
    for node in nodes:
        if node.status in ("requested", "launching") and node.requested_at is not None:
            waited = now - node.requested_at
            if waited >= graces.give_up_launch:
                decisions.append(MarkLost(node.id, "launch never completed"))
            elif waited >= graces.stuck_launch and node.id not in seen:
                decisions.append(RetryLaunch(node.id))
            continue
        if node.status not in _EXPECT_CLUSTER or node.id in seen:
            continue
        if node.launched_at is not None and now - node.launched_at < graces.ghost:
            continue
        decisions.append(MarkLost(node.id))
    return decisions
