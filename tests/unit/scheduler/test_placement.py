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
    deployment_policy,
    fleet_plan,
)

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
ZONES = ["aws/us-east-1/us-east-1a", "aws/us-east-1/us-east-1b", "aws/us-west-2/us-west-2a"]
A, B, C = ZONES
SPOT = PlacementPolicy(spot="spot_with_fallback", spot_spares=1)
LEAN = PlacementPolicy(spot="spot_with_fallback", lean_spares=True)
YOUNG, OD_YOUNG = timedelta(hours=4), timedelta(hours=2)
HEDGE = PlacementPolicy(
    spot="spot_with_fallback", lean_spares=True, hedge_young=YOUNG, hedge_on_demand=OD_YOUNG
)
PROBE = PlacementPolicy(spot="spot_with_fallback", probe=timedelta(minutes=15))
CIC = deployment_policy("spot_with_fallback", "spread", 1)
HOUR = 3600


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


def many(count: int, location: str, age: float) -> list[Replica]:
    return [spot(f"s{i}", location, age=age) for i in range(1, count + 1)]


@pytest.mark.parametrize(
    ("target", "fleet", "troubles", "policy", "launches", "retire"),
    [
        pytest.param(2, [], [], LEAN, [Launch(A, True), Launch(B, True), Launch(C, True)], [],
                     id="lean-keeps-a-spare-that-covers-a-location"),
        pytest.param(4, many(4, A, 5 * HOUR), [], LEAN, [], [],
                     id="lean-buys-no-spare-that-would-cover-nothing"),
        pytest.param(4, [*many(4, A, 5 * HOUR), spot("s5", A, age=60)], [], LEAN, [], ["s5"],
                     id="lean-retires-a-spare-packed-with-the-rest"),
        pytest.param(2, many(2, A, 600), [], HEDGE, [Launch(B, True), Launch(C, True)], [],
                     id="young-location-hedged-elsewhere"),
        pytest.param(2, many(2, A, 5 * HOUR), [], HEDGE, [], [], id="old-location-not-hedged"),
        pytest.param(2, [*many(2, A, 5 * HOUR), spot("s3", B, age=HOUR), spot("s4", C, age=HOUR)],
                     [], HEDGE, [], ["s3", "s4"], id="hedge-retired-once-the-location-is-old"),
        pytest.param(2, many(2, A, 600), [trouble(B), trouble(C)], HEDGE,
                     [Launch(A, False), Launch(B, False)], [],
                     id="young-and-nowhere-else-on-demand-hedges"),
        pytest.param(2, many(2, A, 3 * HOUR), [trouble(B), trouble(C)], HEDGE, [], [],
                     id="past-the-on-demand-hedge-age-no-on-demand"),
        pytest.param(2, [*many(2, A, 600), spot("s3", B, ready=False, age=60),
                         spot("s4", C, ready=False, age=60), od("o1", A), od("o2", B)],
                     [], HEDGE, [], [], id="on-demand-hedge-stays-until-spot-hedge-ready"),
        pytest.param(2, [*many(2, A, 600), spot("s3", B, age=200), spot("s4", C, age=200),
                         od("o1", A), od("o2", B)],
                     [], HEDGE, [], ["o1", "o2"], id="on-demand-hedge-retired-once-spot-ready"),
        pytest.param(2, [], [trouble(A, 20), trouble(B, 10), trouble(C, 5)], PROBE,
                     [Launch(A, True)] * 3 + [Launch(A, False), Launch(B, False)], [],
                     id="all-in-trouble-probe-the-longest-troubled"),
        pytest.param(2, [], [trouble(A, 10), trouble(B, 10), trouble(C, 5)], PROBE,
                     [Launch(A, False), Launch(B, False)], [], id="all-in-trouble-too-recently"),
        pytest.param(2, [], [], PlacementPolicy(strategy="packed", spot="spot_with_fallback"),
                     [Launch(A, True), Launch(A, True), Launch(B, True)], [],
                     id="packed-spares-go-elsewhere"),
        pytest.param(1, [], [], CIC, [Launch(A, True), Launch(B, True), Launch(A, False)], [],
                     id="tuned-target-one-spot-spare-and-cover"),
        pytest.param(2, many(2, A, 600), [], deployment_policy("spot_with_fallback", "spread", 0),
                     [], [], id="tuned-without-spares-never-hedges"),
        pytest.param(2, many(2, A, 600), [trouble(B), trouble(C)],
                     PlacementPolicy(spot="spot_only", lean_spares=True, hedge_young=YOUNG,
                                     hedge_on_demand=OD_YOUNG),
                     [], [], id="spot-only-never-hedges-on-demand"),
    ],
)  # fmt: skip
def test_spares_and_hedges(
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


def test_lean_spares_in_a_single_location_buy_nothing() -> None:
    assert fleet_plan(2, [], [A], [], NOW, LEAN).launches == [Launch(A, True)] * 2
    assert fleet_plan(2, [], [A], [], NOW, SPOT).launches == [Launch(A, True)] * 3


def test_only_spot_with_fallback_gets_the_tuned_policy() -> None:
    assert deployment_policy("spot_only", "packed", 2) == PlacementPolicy(
        strategy="packed", spot="spot_only", spot_spares=2
    )
    assert (CIC.cover, CIC.lean_spares) == ("unready", True)
    # On-demand hedges cost more than spot ones, so they stop sooner; probing all-troubled
    # locations starts before the backoff would let them be used again.
    assert timedelta(0) < CIC.hedge_on_demand < CIC.hedge_young
    assert timedelta(0) < CIC.probe < CIC.backoff


def test_old_trouble_is_forgotten_after_the_backoff() -> None:
    old = [trouble(A, minutes_ago=31)]
    assert available_locations(ZONES, old, NOW, timedelta(minutes=30)) == ZONES


def test_when_every_place_is_in_trouble_the_longest_troubled_comes_first() -> None:
    troubles = [trouble(A, 1), trouble(B, 20), trouble(C, 5)]
    assert available_locations(ZONES, troubles, NOW, timedelta(minutes=30)) == [B, C, A]


def test_without_locations_the_optimizer_chooses() -> None:
    plan = fleet_plan(2, [], [], [], NOW, SPOT)
    assert plan.launches == [Launch(None, True)] * 3


def test_without_locations_each_replica_counts_as_its_own_location() -> None:
    """The tuned policy keeps its spare and hedges nothing: no location is known to hold
    several replicas, so the spare can replace any one of them."""
    plan = fleet_plan(2, [], [], [], NOW, CIC)
    assert plan.launches == [Launch(None, True)] * 3 + [Launch(None, False)] * 2
    young = [spot(f"s{i}", None, age=600) for i in range(3)] + [od("o1"), od("o2")]
    assert fleet_plan(2, young, [], [], NOW, CIC).retire == ["o1", "o2"]
