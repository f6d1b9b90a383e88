"""Replica planning: from a deployment and its nodes to launch and drain decisions."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cic_common.events import NodeSpec
from cic_common.lifecycle import LIVE, NodeStatus

from cic_scheduler.domain.placement import Launch, PlacementPolicy, Replica, Trouble, fleet_plan

__all__ = [
    "Decision",
    "DeploymentView",
    "DrainNode",
    "LaunchReplica",
    "NodeView",
    "RequestTerminate",
    "ResendLaunch",
    "launches_held_until",
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
    revision: int = 1
    """Bumped when what the nodes run changes; older nodes are rolled."""


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
    revision: int = 1


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


_CAPACITY = ("no_capacity", "quota")
_LAUNCHED = frozenset(
    {NodeStatus.INITIALIZING, NodeStatus.ACTIVE, NodeStatus.UNHEALTHY, NodeStatus.DRAINING,
     NodeStatus.DEAD, NodeStatus.TERMINATED, NodeStatus.LOST}
)  # fmt: skip


def launches_held_until(
    nodes: list[NodeView],
    base: timedelta = timedelta(seconds=30),
    cap: timedelta = timedelta(minutes=15),
) -> datetime | None:
    """When launches may resume after failures other than capacity (a bad spec, auth,
    timeouts): ``base`` after the first, doubling with each one since a launch last
    succeeded, at most ``cap``. None when the last launches did not fail that way.

    Capacity and quota refusals are not held here: ``fleet_plan`` moves to another
    location (or market) instead, which is the cure for those.
    """
    succeeded = max((n.requested_at for n in nodes if n.status in _LAUNCHED), default=None)
    failures = sorted(
        n.updated_at
        for n in nodes
        if n.status is NodeStatus.LAUNCH_FAILED
        and not n.reason.startswith(_CAPACITY)
        and (succeeded is None or n.requested_at > succeeded)
    )
    if not failures:
        return None
    hold: timedelta = min(cap, base * 2 ** (len(failures) - 1))
    return failures[-1] + hold


def _roll(
    desired: int,
    current: list[NodeView],
    outdated: list[NodeView],
    launches: list[Launch],
    deleted: bool,
) -> tuple[list[Launch], list[DrainNode]]:
    """A rolling update: one new replica at a time (surge first), and an outdated one
    drained only while the ready replicas, old and new, stay at ``desired`` without it."""
    if deleted:
        return launches, [DrainNode(n.id, "deployment deleted") for n in outdated]
    pending = sum(n.status is not NodeStatus.ACTIVE for n in current)
    launches = launches[: max(0, 1 - pending)]
    ready = sum(n.status is NodeStatus.ACTIVE for n in current + outdated)
    drains = []
    for node in sorted(outdated, key=lambda n: (n.status is NodeStatus.ACTIVE, n.requested_at)):
        is_ready = node.status is NodeStatus.ACTIVE
        if is_ready and ready - 1 < desired:
            break
        drains.append(DrainNode(node.id, "rolling update"))
        ready -= is_ready
    return launches, drains


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
    - After launches failed for reasons other than capacity, new ones wait
      (``launches_held_until``): a bad spec is not relaunched on every pass.
    ``nodes`` may include recently ended ones: they tell which locations are in trouble
    and which launches failed.
    """
    desired = 0 if deployment.deleted else deployment.replicas
    live = [n for n in nodes if n.status in LIVE]
    current = [n for n in live if n.revision >= deployment.revision]
    outdated = [n for n in live if n.revision < deployment.revision]
    fleet = [
        Replica(n.id, n.location, n.spot, n.status is NodeStatus.ACTIVE, now - n.requested_at)
        for n in current
    ]
    troubles = [Trouble(n.location, n.updated_at) for n in nodes if _troubled(n) and n.location]
    placed = fleet_plan(desired, fleet, deployment.locations, troubles, now, deployment.policy)
    held = launches_held_until(nodes)
    launches = placed.launches if held is None or now >= held else []
    reason = "deployment deleted" if deployment.deleted else "scaled down"
    retire = [DrainNode(node_id, reason) for node_id in placed.retire]
    if outdated:
        launches, rolled = _roll(desired, current, outdated, launches, deployment.deleted)
        retire += rolled
    decisions: list[Decision] = [
        LaunchReplica(
            deployment.id,
            deployment.revision,
            deployment.spec.model_copy(update={"infra": launch.location, "use_spot": launch.spot}),
        )
        for launch in launches
    ]
    decisions += retire
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
