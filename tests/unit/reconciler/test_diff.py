"""The reconcile diff: orphans, ghosts, and the grace periods that avoid false alarms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cic_reconciler.domain.diff import (
    Graces,
    KnownNode,
    MarkLost,
    RetryLaunch,
    SeenCluster,
    TerminateOrphan,
    diff,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
GRACES = Graces(
    orphan=timedelta(minutes=10),
    ghost=timedelta(minutes=1),
    stuck_launch=timedelta(minutes=20),
    give_up_launch=timedelta(minutes=60),
)


def ago(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


def cluster(node_id: str, minutes: float = 30) -> SeenCluster:
    return SeenCluster(f"cic-local-host-cpu-od-{node_id}", node_id, ago(minutes))


@pytest.mark.parametrize(
    ("nodes", "clusters", "expected"),
    [
        pytest.param([KnownNode("a", "active", ago(30))], [cluster("a")], [], id="agree"),
        pytest.param(
            [], [cluster("x")], [TerminateOrphan("x", "cic-local-host-cpu-od-x")], id="orphan"
        ),
        pytest.param([], [cluster("x", minutes=2)], [], id="young-orphan-waits"),
        pytest.param(
            [KnownNode("x", "terminated", ago(30))],
            [cluster("x")],
            [TerminateOrphan("x", "cic-local-host-cpu-od-x")],
            id="terminated-but-running",
        ),
        pytest.param([KnownNode("a", "active", ago(30))], [], [MarkLost("a")], id="ghost"),
        pytest.param(
            [KnownNode("a", "draining", ago(30))], [], [MarkLost("a")], id="ghost-draining"
        ),
        pytest.param([KnownNode("a", "initializing", ago(0.5))], [], [], id="young-node-waits"),
        pytest.param(
            [KnownNode("a", "launching", None)], [], [], id="launching-has-no-cluster-yet"
        ),
        pytest.param([KnownNode("a", "requested", None)], [], [], id="requested-has-no-cluster"),
        pytest.param([KnownNode("a", "launching", None, ago(5))], [], [], id="launch-in-time"),
        pytest.param(
            [KnownNode("a", "launching", None, ago(21))],
            [],
            [RetryLaunch("a")],
            id="stuck-launch-is-resent",
        ),
        pytest.param(
            [KnownNode("a", "requested", None, ago(61))],
            [],
            [MarkLost("a", "launch never completed")],
            id="stuck-launch-given-up",
        ),
    ],
)
def test_diff(nodes: list[KnownNode], clusters: list[SeenCluster], expected: list[object]) -> None:
    assert diff(nodes, clusters, NOW, GRACES) == expected
