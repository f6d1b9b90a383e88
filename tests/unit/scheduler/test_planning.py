"""Replica planning: a table of deployments and nodes in, decisions out."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from cic_common.events import NodeSpec
from cic_common.lifecycle import NodeStatus
from cic_scheduler.domain.placement import PlacementPolicy
from cic_scheduler.domain.planning import (
    DeploymentView,
    DrainNode,
    LaunchReplica,
    NodeView,
    RequestTerminate,
    ResendLaunch,
    plan,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = NodeSpec(model="m")


def deployment(replicas: int, *, deleted: bool = False) -> DeploymentView:
    return DeploymentView(id="d1", generation=1, replicas=replicas, deleted=deleted, spec=SPEC)


def node(
    node_id: str, status: NodeStatus, *, age: float = 60, sent_ago: float | None = 1
) -> NodeView:
    at = NOW - timedelta(seconds=age)
    sent = None if sent_ago is None else NOW - timedelta(seconds=sent_ago)
    return NodeView(node_id, status, requested_at=at, updated_at=at, command_sent_at=sent)


S = NodeStatus


@pytest.mark.parametrize(
    ("replicas", "nodes", "expected"),
    [
        pytest.param(2, [], [LaunchReplica("d1", 1, SPEC)] * 2, id="empty-launches-all"),
        pytest.param(1, [node("a", S.ACTIVE)], [], id="at-strength-does-nothing"),
        pytest.param(
            1,
            [node("a", S.LOST), node("b", S.TERMINATED)],
            [LaunchReplica("d1", 1, SPEC)],
            id="gone-nodes-do-not-count",
        ),
        pytest.param(
            1,
            [node("a", S.DRAINING, sent_ago=1)],
            [LaunchReplica("d1", 1, SPEC)],
            id="draining-node-is-replaced-at-once",
        ),
        pytest.param(
            1,
            [node("a", S.ACTIVE, age=100), node("b", S.ACTIVE, age=10)],
            [DrainNode("b", "scaled down")],
            id="scale-down-drains-newest",
        ),
        pytest.param(
            1,
            [node("a", S.ACTIVE), node("b", S.REQUESTED)],
            [DrainNode("b", "scaled down")],
            id="scale-down-drains-unlaunched-first",
        ),
        pytest.param(
            1,
            [node("a", S.REQUESTED, sent_ago=31)],
            [ResendLaunch("a")],
            id="unanswered-launch-is-resent",
        ),
        pytest.param(1, [node("a", S.REQUESTED, sent_ago=5)], [], id="recent-launch-waits"),
        pytest.param(
            0,
            [node("a", S.DEAD, sent_ago=None)],
            [RequestTerminate("a", False)],
            id="dead-node-is-terminated-forcefully",
        ),
    ],
)
def test_plan(replicas: int, nodes: list[NodeView], expected: list[object]) -> None:
    assert plan(deployment(replicas), nodes, NOW) == expected


def test_deleted_deployment_drains_every_live_node() -> None:
    nodes = [node("a", S.ACTIVE), node("b", S.INITIALIZING)]
    decisions = plan(deployment(3, deleted=True), nodes, NOW)
    assert sorted(d.node_id for d in decisions if isinstance(d, DrainNode)) == ["a", "b"]
    assert not [d for d in decisions if isinstance(d, LaunchReplica)]


def test_terminate_is_resent_only_when_due() -> None:
    fresh = plan(deployment(0), [node("a", S.DRAINING, age=60, sent_ago=1)], NOW)
    stale = plan(deployment(0), [node("a", S.DRAINING, age=60, sent_ago=40)], NOW)
    assert fresh == []
    assert stale == [RequestTerminate("a", True)]


ZONES = ("aws/us-east-1/us-east-1a", "aws/us-east-1/us-east-1b", "aws/us-west-2/us-west-2a")


def spot_deployment(replicas: int) -> DeploymentView:
    policy = PlacementPolicy(spot="spot_with_fallback", spot_spares=0)
    return DeploymentView("d1", 1, replicas, False, SPEC, policy=policy, locations=ZONES)


def spot_node(node_id: str, zone: str, status: NodeStatus, reason: str = "") -> NodeView:
    at = NOW - timedelta(seconds=30)
    return NodeView(node_id, status, at, at, at, location=zone, spot=True, reason=reason)


def launched_where(decisions: Sequence[object]) -> list[tuple[str | None, bool]]:
    return [(d.spec.infra, d.spec.use_spot) for d in decisions if isinstance(d, LaunchReplica)]


def test_a_warned_spot_node_is_replaced_at_once_in_another_zone() -> None:
    nodes = [
        spot_node("a", ZONES[0], S.DRAINING, "termination warning from aws, deadline 08:02"),
        spot_node("b", ZONES[1], S.ACTIVE),
    ]
    assert launched_where(plan(spot_deployment(2), nodes, NOW)) == [(ZONES[2], True)]


@pytest.mark.parametrize(
    ("status", "reason"),
    [(S.LOST, "cluster missing at its backend"),
     (S.LAUNCH_FAILED, "no_capacity: ResourcesUnavailableError: no V100")],
)  # fmt: skip
def test_a_zone_that_lost_or_refused_spot_is_avoided(status: NodeStatus, reason: str) -> None:
    nodes = [spot_node("a", ZONES[0], status, reason), spot_node("b", ZONES[2], S.ACTIVE)]
    assert launched_where(plan(spot_deployment(2), nodes, NOW)) == [(ZONES[1], True)]


def test_a_scale_down_drain_is_not_a_zone_in_trouble() -> None:
    nodes = [
        spot_node("a", ZONES[0], S.DRAINING, "scaled down"),
        spot_node("b", ZONES[1], S.ACTIVE),
    ]
    assert launched_where(plan(spot_deployment(2), nodes, NOW)) == [(ZONES[0], True)]


def versioned(node_id: str, status: NodeStatus, revision: int, age: float = 600) -> NodeView:
    at = NOW - timedelta(seconds=age)
    return NodeView(node_id, status, at, at, at, revision=revision)


def rolled(replicas: int, nodes: list[NodeView]) -> tuple[int, list[str]]:
    deployment = DeploymentView("d1", 5, replicas, False, SPEC, revision=2)
    decisions = plan(deployment, nodes, NOW)
    launched = [d for d in decisions if isinstance(d, LaunchReplica)]
    assert all(d.generation == 2 for d in launched)
    return len(launched), [d.node_id for d in decisions if isinstance(d, DrainNode)]


@pytest.mark.parametrize(
    ("nodes", "launches", "drains"),
    [
        pytest.param([versioned("a", S.ACTIVE, 1), versioned("b", S.ACTIVE, 1)], 1, [],
                     id="surge-one-new-first"),
        pytest.param([versioned("a", S.ACTIVE, 1), versioned("b", S.ACTIVE, 1),
                      versioned("n1", S.INITIALIZING, 2)], 0, [], id="wait-for-it"),
        pytest.param([versioned("a", S.ACTIVE, 1, age=900), versioned("b", S.ACTIVE, 1),
                      versioned("n1", S.ACTIVE, 2)], 1, ["a"], id="then-drain-the-oldest"),
        pytest.param([versioned("b", S.ACTIVE, 1), versioned("n1", S.ACTIVE, 2),
                      versioned("n2", S.ACTIVE, 2)], 0, ["b"], id="last-old-one-goes"),
        pytest.param([versioned("a", S.UNHEALTHY, 1), versioned("b", S.ACTIVE, 1)], 1, ["a"],
                     id="an-unready-old-one-goes-at-once"),
        pytest.param([versioned("n1", S.ACTIVE, 2), versioned("n2", S.ACTIVE, 2)], 0, [],
                     id="done"),
    ],
)  # fmt: skip
def test_a_rolling_update_never_drops_below_the_replica_count(
    nodes: list[NodeView], launches: int, drains: list[str]
) -> None:
    assert rolled(2, nodes) == (launches, drains)


def failed(node_id: str, reason: str, ago: float, *, requested: float | None = None) -> NodeView:
    """A launch that failed ``ago`` seconds before NOW (requested a minute earlier)."""
    at = NOW - timedelta(seconds=ago)
    asked = NOW - timedelta(seconds=requested if requested is not None else ago + 60)
    return NodeView(node_id, S.LAUNCH_FAILED, requested_at=asked, updated_at=at,
                    command_sent_at=asked, reason=reason)  # fmt: skip


@pytest.mark.parametrize(
    ("nodes", "launches"),
    [
        pytest.param([failed("a", "bad_spec: no such model", ago=10)], 0,
                     id="first-failure-holds-30s"),
        pytest.param([failed("a", "bad_spec: no such model", ago=31)], 1,
                     id="first-failure-released-after-30s"),
        pytest.param([failed("a", "auth: denied", ago=100), failed("b", "auth: denied", ago=50),
                      failed("c", "auth: denied", ago=40)], 0,
                     id="third-failure-holds-2-minutes"),
        pytest.param([failed(str(i), "timeout: launch", ago=15 * 60 + 1 + i) for i in range(8)], 1,
                     id="hold-capped-at-15-minutes"),
        pytest.param([failed("a", "no_capacity: none in zone", ago=1),
                      failed("b", "quota: exceeded", ago=1)], 1,
                     id="capacity-refusals-are-not-held"),
        pytest.param([failed("a", "bad_spec: x", ago=10, requested=600), node("b", S.TERMINATED)],
                     1, id="a-launch-that-succeeded-since-clears-it"),
    ],
)  # fmt: skip
def test_launches_back_off_after_failures_other_than_capacity(
    nodes: list[NodeView], launches: int
) -> None:
    decisions = plan(deployment(1), nodes, NOW)
    assert sum(isinstance(d, LaunchReplica) for d in decisions) == launches
