"""Spot-first placement: a table of fleets and places in, launches and retirements out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cic_scheduler.domain.placement import (
    Launch,
    PlacementPolicy,
    Replica,
    Trouble,
    available_locations,
    fleet_plan,
)

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
ZONES = ["aws/us-east-1/us-east-1a", "aws/us-east-1/us-east-1b", "aws/us-west-2/us-west-2a"]
A, B, C = ZONES
SPOT = PlacementPolicy(spot="spot_with_fallback", spot_spares=1)


def spot(node_id: str, location: str | None, ready: bool = True, age: float = 600) -> Replica:
    return Replica(node_id, location, True, ready, timedelta(seconds=age))


def od(node_id: str, location: str | None = None, ready: bool = True, age: float = 600) -> Replica:
    return Replica(node_id, location, False, ready, timedelta(seconds=age))


def trouble(location: str, minutes_ago: float = 1) -> Trouble:
    return Trouble(location, NOW - timedelta(minutes=minutes_ago))


@pytest.mark.parametrize(
    ("target", "fleet", "troubles", "policy", "launches", "retire"),
    [
        pytest.param(2, [], [], PlacementPolicy(), [Launch(A, False), Launch(B, False)], [],
                     id="on-demand-spreads"),
        pytest.param(2, [], [], PlacementPolicy(strategy="packed"),
                     [Launch(A, False), Launch(A, False)], [], id="on-demand-packed"),
        pytest.param(2, [], [], SPOT, [Launch(A, True), Launch(B, True), Launch(C, True)], [],
                     id="spot-spreads-with-a-spare"),
        pytest.param(2, [spot("s1", A), spot("s2", B), spot("s3", C)], [], SPOT, [], [],
                     id="at-strength"),
        pytest.param(2, [spot("s2", B), spot("s3", C)], [trouble(A)], SPOT, [Launch(B, True)],
                     [], id="preempted-zone-is-avoided"),
        pytest.param(2, [spot("s2", B, ready=False)], [trouble(A), trouble(C)], SPOT,
                     [Launch(B, True), Launch(B, True)], [], id="spot-pending-is-not-covered"),
        pytest.param(2, [], [trouble(A), trouble(B), trouble(C)], SPOT,
                     [Launch(A, False), Launch(B, False)], [], id="no-spot-anywhere-on-demand"),
        pytest.param(2, [spot("s1", A), spot("s2", B), od("o1", A)], [], SPOT,
                     [Launch(C, True)], ["o1"], id="spot-ready-again-cover-retired"),
        pytest.param(1, [spot("s1", A), spot("s2", B), spot("s3", C, age=10)], [], SPOT, [],
                     ["s3"], id="scale-down-retires-newest"),
        pytest.param(1, [spot("s1", A), spot("s2", B, ready=False, age=900), spot("s3", C)], [],
                     SPOT, [], ["s2"], id="scale-down-retires-unready-first"),
        pytest.param(0, [spot("s1", A), od("o1")], [], SPOT, [], ["o1", "s1"], id="to-zero"),
        pytest.param(2, [], [trouble(A), trouble(B), trouble(C)],
                     PlacementPolicy(spot="spot_only", spot_spares=0),
                     [Launch(A, True), Launch(B, True)], [], id="spot-only-keeps-trying"),
    ],
)  # fmt: skip
def test_fleet_plan(
    target: int,
    fleet: list[Replica],
    troubles: list[Trouble],
    policy: PlacementPolicy,
    launches: list[Launch],
    retire: list[str],
) -> None:
    plan = fleet_plan(target, fleet, ZONES, troubles, NOW, policy)
    assert sorted(plan.launches, key=repr) == sorted(launches, key=repr)
    assert plan.retire == retire


def test_old_trouble_is_forgotten_after_the_backoff() -> None:
    old = [trouble(A, minutes_ago=31)]
    assert available_locations(ZONES, old, NOW, timedelta(minutes=30)) == ZONES


def test_when_every_place_is_in_trouble_the_longest_troubled_comes_first() -> None:
    troubles = [trouble(A, 1), trouble(B, 20), trouble(C, 5)]
    assert available_locations(ZONES, troubles, NOW, timedelta(minutes=30)) == [B, C, A]


def test_without_locations_the_optimizer_chooses() -> None:
    plan = fleet_plan(2, [], [], [], NOW, SPOT)
    assert plan.launches == [Launch(None, True)] * 3
