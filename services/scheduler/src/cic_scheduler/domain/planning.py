"""Replica planning: from a deployment and its nodes to launch and drain decisions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cic_common.events import NodeSpec
from cic_common.lifecycle import LIVE, NodeStatus

__all__ = [
    "Decision",
    "DeploymentView",
    "DrainNode",
    "LaunchReplica",
    "NodeView",
    "RequestTerminate",
    "ResendLaunch",
    "plan",
]


@dataclass(frozen=True)
class DeploymentView:
    id: str
    generation: int
    replicas: int
    deleted: bool
    spec: NodeSpec


@dataclass(frozen=True)
class NodeView:
    id: str
    status: NodeStatus
    requested_at: datetime
    updated_at: datetime
    command_sent_at: datetime | None


@dataclass(frozen=True)
class LaunchReplica:
    """Request a new node (the executor gives it its id)."""

    deployment_id: str
    generation: int
    spec: NodeSpec


@dataclass(frozen=True)
class DrainNode:
    """Stop routing to the node and ask for its termination."""

    node_id: str
    reason: str


@dataclass(frozen=True)
class ResendLaunch:
    """A launch request that has had no answer yet: send it again (same node id)."""

    node_id: str


@dataclass(frozen=True)
class RequestTerminate:
    """Ask again for the termination of a draining or dead node."""

    node_id: str
    graceful: bool


Decision = LaunchReplica | DrainNode | ResendLaunch | RequestTerminate

_DRAIN_FIRST = {
    NodeStatus.REQUESTED: 0,
    NodeStatus.LAUNCHING: 1,
    NodeStatus.UNHEALTHY: 2,
    NodeStatus.INITIALIZING: 3,
    NodeStatus.ACTIVE: 4,
}


def plan(
    deployment: DeploymentView,
    nodes: list[NodeView],
    now: datetime,
    resend_after: timedelta = timedelta(seconds=30),
) -> list[Decision]:
    """Decisions that bring ``deployment`` to its replica count; idempotent in effect.

    - Fewer live nodes than wanted: launch the difference. Draining, dead and lost nodes
      do not count, so they are replaced at once.
    - More: drain the least useful first (not yet launched, then unhealthy, then the newest).
    - A deleted deployment wants none.
    - Commands without an outcome after ``resend_after`` are sent again.
    """
    desired = 0 if deployment.deleted else deployment.replicas
    live = [n for n in nodes if n.status in LIVE]
    decisions: list[Decision] = []
    if len(live) < desired:
        decisions += [
            LaunchReplica(deployment.id, deployment.generation, deployment.spec)
            for _ in range(desired - len(live))
        ]
    elif len(live) > desired:
        ranked = sorted(live, key=lambda n: (_DRAIN_FIRST[n.status], -n.requested_at.timestamp()))
        reason = "deployment deleted" if deployment.deleted else "scaled down"
        decisions += [DrainNode(n.id, reason) for n in ranked[: len(live) - desired]]
    draining = {d.node_id for d in decisions if isinstance(d, DrainNode)}
    for node in nodes:
        if node.id in draining:
            continue
        due = node.command_sent_at is None or now - node.command_sent_at >= resend_after
        if node.status is NodeStatus.REQUESTED and due:
            decisions.append(ResendLaunch(node.id))
        elif node.status in (NodeStatus.DRAINING, NodeStatus.DEAD):
            changed_since = node.command_sent_at is None or node.command_sent_at < node.updated_at
            if due or changed_since:
                decisions.append(RequestTerminate(node.id, node.status is NodeStatus.DRAINING))
    return decisions
