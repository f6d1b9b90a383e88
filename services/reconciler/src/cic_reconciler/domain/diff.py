"""The reconcile diff: our node records against the clusters the backends report."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["Decision", "KnownNode", "MarkLost", "SeenCluster", "TerminateOrphan", "diff"]

_EXPECT_CLUSTER = frozenset({"initializing", "active", "unhealthy", "draining", "dead"})
"""Statuses in which a node must exist at its backend. ``requested`` and ``launching``
may not have a cluster yet, and terminal nodes must not have one."""


@dataclass(frozen=True)
class KnownNode:
    id: str
    status: str
    launched_at: datetime | None


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


Decision = TerminateOrphan | MarkLost


def diff(
    nodes: list[KnownNode],
    clusters: list[SeenCluster],
    now: datetime,
    *,
    orphan_grace: timedelta,
    ghost_grace: timedelta,
) -> list[Decision]:
    """Decisions that bring the backends and our records back into agreement.

    A cluster younger than ``orphan_grace`` is left alone: its launch may not be
    recorded yet. A node launched less than ``ghost_grace`` ago is left alone too: the
    inventory may have been taken before its cluster appeared.
    """
    by_id = {n.id: n for n in nodes}
    seen = {c.node_id for c in clusters}
    decisions: list[Decision] = []
    for cluster in clusters:
        node = by_id.get(cluster.node_id)
        owned = node is not None and node.status not in ("terminated", "launch_failed", "lost")
        if not owned and now - cluster.launched_at >= orphan_grace:
            decisions.append(TerminateOrphan(cluster.node_id, cluster.name))
    for node in nodes:
        if node.status not in _EXPECT_CLUSTER or node.id in seen:
            continue
        if node.launched_at is not None and now - node.launched_at < ghost_grace:
            continue
        decisions.append(MarkLost(node.id))
    return decisions
