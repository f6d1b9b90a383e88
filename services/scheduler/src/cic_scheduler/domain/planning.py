"""Replica planning: from a deployment and its nodes to launch and drain decisions."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cic_common.events import NodeSpec
from cic_common.lifecycle import LIVE, NodeStatus

from cic_scheduler.domain.placement import PlacementPolicy, Replica, Trouble, fleet_plan

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
    """What every node runs; placement fills in ``infra`` and ``use_spot`` per node."""
    policy: PlacementPolicy = field(default_factory=PlacementPolicy)
    locations: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeView:
    id: str
    status: NodeStatus
    requested_at: datetime
    updated_at: datetime
    command_sent_at: datetime | None
    location: str | None = None
    spot: bool = False
    reason: str = ""


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


def _troubled(node: NodeView) -> bool:
    """A spot node the cloud took or would not give: its location is avoided a while."""
    if not node.spot or node.location is None:
        return False
    if node.status is NodeStatus.DRAINING:
        return node.reason.startswith("termination warning")
    if node.status is NodeStatus.LAUNCH_FAILED:
        return node.reason.startswith(("no_capacity", "quota"))
    return node.status is NodeStatus.LOST


def plan(
    deployment: DeploymentView,
    nodes: list[NodeView],
    now: datetime,
    resend_after: timedelta = timedelta(seconds=30),
) -> list[Decision]:
    """Decisions that bring ``deployment`` to its replica count; idempotent in effect.

    - Where and on which market to launch, and what to retire, is ``fleet_plan``'s
      call: draining, dead and lost nodes do not count, so they are replaced at once,
      in another location when the cloud took them; the least useful go first.
    - A deleted deployment wants none.
    - Commands without an outcome after ``resend_after`` are sent again.
    ``nodes`` may include recently ended ones: they tell which locations are in trouble.
    """
    desired = 0 if deployment.deleted else deployment.replicas
    live = [n for n in nodes if n.status in LIVE]
    fleet = [
        Replica(n.id, n.location, n.spot, n.status is NodeStatus.ACTIVE, now - n.requested_at)
        for n in live
    ]
    troubles = [Trouble(n.location, n.updated_at) for n in nodes if _troubled(n) and n.location]
    placed = fleet_plan(desired, fleet, deployment.locations, troubles, now, deployment.policy)
    decisions: list[Decision] = [
        LaunchReplica(
            deployment.id,
            deployment.generation,
            deployment.spec.model_copy(update={"infra": launch.location, "use_spot": launch.spot}),
        )
        for launch in placed.launches
    ]
    reason = "deployment deleted" if deployment.deleted else "scaled down"
    decisions += [DrainNode(node_id, reason) for node_id in placed.retire]
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
