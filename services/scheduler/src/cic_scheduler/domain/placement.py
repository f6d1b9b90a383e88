"""Spot-first placement: how many replicas of each market, where, and which to retire.

One pure function, ``fleet_plan``, decides for a deployment from the replicas it has,
the places it may use and the places that recently failed it. The scheduler runs it on
every pass, and ``bench/spot_sim`` replays spot availability traces through the very
same function.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

__all__ = [
    "Cover",
    "FleetPlan",
    "Launch",
    "PlacementPolicy",
    "Replica",
    "SpotPolicy",
    "Strategy",
    "Trouble",
    "available_locations",
    "deployment_policy",
    "fleet_plan",
]

SpotPolicy = Literal["spot_only", "spot_with_fallback", "on_demand"]
Strategy = Literal["spread", "packed"]
Cover = Literal["unavailable", "unready"]


@dataclass(frozen=True)
class PlacementPolicy:
    strategy: Strategy = "spread"
    spot: SpotPolicy = "on_demand"
    spot_spares: int = 1
    """Spot replicas beyond the target, so one preemption never costs strength."""
    backoff: timedelta = timedelta(minutes=30)
    """How long a location that preempted us or had no capacity is avoided."""
    cover: Cover = "unavailable"
    """``spot_with_fallback``: the spot replicas on-demand ones stand in for: those that
    cannot be had (no usable location), or also those not ready yet (SkyServe's dynamic
    fallback: dearer, but a refused or lost spot launch then costs no strength)."""
    hedge_troubled: int = 0
    """``spot_with_fallback``: once this many locations are in trouble (0: never), on-demand
    replicas also make up what losing the location with the most ready spot replicas would
    take below the target: spot capacity tends to go from several places at once."""


@dataclass(frozen=True)
class Replica:
    node_id: str
    location: str | None
    spot: bool
    ready: bool
    age: timedelta = timedelta(0)
    """Since it was requested: the newest go first when some must."""


@dataclass(frozen=True)
class Trouble:
    """A spot replica was preempted, warned or refused capacity at ``location``."""

    location: str
    at: datetime


@dataclass(frozen=True)
class Launch:
    location: str | None
    spot: bool


@dataclass(frozen=True)
class FleetPlan:
    launches: list[Launch] = field(default_factory=list)
    retire: list[str] = field(default_factory=list)
    """Node ids, least useful first."""


def deployment_policy(spot: SpotPolicy, strategy: Strategy, spot_spares: int) -> PlacementPolicy:
    """The policy the scheduler runs for a deployment. With ``spot_with_fallback`` it is
    the one tuned on the public spot traces (``bench/spot_sim``): on-demand stands in for
    every spot replica not ready yet and, while three or more locations are in trouble,
    for what losing the busiest one would take; a location that failed us is avoided
    for 2.5 hours."""
    if spot != "spot_with_fallback":
        return PlacementPolicy(strategy=strategy, spot=spot, spot_spares=spot_spares)
    return PlacementPolicy(
        strategy=strategy,
        spot=spot,
        spot_spares=spot_spares,
        backoff=timedelta(minutes=150),
        cover="unready",
        hedge_troubled=3,
    )


def available_locations(
    locations: Sequence[str | None], troubles: Sequence[Trouble], now: datetime, backoff: timedelta
) -> list[str | None]:
    """``locations`` (in preference order) without those in trouble within ``backoff``.

    When every location is in trouble, all of them are tried again, those troubled
    longest ago first: spot capacity comes back, and waiting for it forever is worse.
    """
    recent: dict[str, datetime] = {}
    for trouble in troubles:
        if now - trouble.at < backoff:
            recent[trouble.location] = max(trouble.at, recent.get(trouble.location, trouble.at))
    fine = [loc for loc in locations if loc is None or loc not in recent]
    if fine:
        return fine
    return sorted(locations, key=lambda loc: recent.get(loc or "", now))


def _place(
    count: int, candidates: Sequence[str | None], fleet: Sequence[Replica], strategy: Strategy
) -> list[str | None]:
    """Locations for ``count`` new replicas: spread evens out the replicas per location
    (ties to the preferred, i.e. cheaper, one); packed takes the preferred one."""
    if not candidates:
        return []
    if strategy == "packed":
        return [candidates[0]] * count
    load = Counter(r.location for r in fleet)
    chosen = []
    for _ in range(count):
        best = min(candidates, key=lambda loc: (load[loc], candidates.index(loc)))
        chosen.append(best)
        load[best] += 1
    return chosen


def _surplus(replicas: Sequence[Replica], keep: int) -> list[str]:
    """The ids beyond ``keep``: not yet ready first, then the newest."""
    ranked = sorted(replicas, key=lambda r: (r.ready, r.age, r.node_id))
    return [r.node_id for r in ranked[: max(0, len(replicas) - keep)]]


def fleet_plan(
    target: int,
    fleet: Sequence[Replica],
    locations: Sequence[str | None],
    troubles: Sequence[Trouble],
    now: datetime,
    policy: PlacementPolicy,
) -> FleetPlan:
    """Launches and retirements that keep ``target`` replicas ready, cheaply.

    ``fleet`` holds the live replicas (draining ones are already gone from it).

    - ``on_demand``: ``target`` on-demand replicas.
    - ``spot_only``: ``target`` + spares on spot, in locations not in trouble.
    - ``spot_with_fallback``: as spot_only, plus on-demand cover for the spot replicas
      that cannot be had while no spot location is usable (see ``PlacementPolicy.cover``
      and ``hedge_troubled`` for more); the cover is retired once spot replicas are
      ready again, not before.
    """
    spot = [r for r in fleet if r.spot]
    on_demand = [r for r in fleet if not r.spot]
    usable = available_locations(locations or [None], troubles, now, policy.backoff)
    spot_usable = [
        loc for loc in usable if loc is None or not _troubled(loc, troubles, now, policy.backoff)
    ]
    want_spot = 0 if policy.spot == "on_demand" or target == 0 else target + policy.spot_spares
    spot_locations = spot_usable or (usable if policy.spot == "spot_only" else [])
    new_spot = max(0, want_spot - len(spot)) if spot_locations else 0
    if policy.spot == "spot_with_fallback" and target > 0:
        spot_ready = sum(r.ready for r in spot)
        # Spot replicas that will come: pending or launched now, in places not in trouble.
        spot_coming = len(spot) - spot_ready + new_spot if spot_usable else 0
        want_od = 0 if spot_ready >= target else max(0, target - spot_ready - spot_coming)
        if policy.cover == "unready":
            want_od = max(want_od, target - spot_ready)
        if policy.hedge_troubled and _in_trouble(locations, troubles, now, policy.backoff) >= (
            policy.hedge_troubled
        ):
            busiest = max(Counter(r.location for r in spot if r.ready).values(), default=0)
            want_od = max(want_od, target - (spot_ready - busiest))
        # Cover already there stays until the spot replicas it stands in for are ready.
        keep_od = max(want_od, target - spot_ready)
    else:
        want_od = keep_od = target if policy.spot == "on_demand" else 0
    plan = FleetPlan()
    for loc in _place(new_spot, spot_locations, spot, policy.strategy):
        plan.launches.append(Launch(loc, spot=True))
    od_locations = list(locations) or [None]
    for loc in _place(max(0, want_od - len(on_demand)), od_locations, on_demand, policy.strategy):
        plan.launches.append(Launch(loc, spot=False))
    plan.retire.extend(_surplus(on_demand, keep_od))
    plan.retire.extend(_surplus(spot, want_spot))
    return plan


def _troubled(
    location: str, troubles: Sequence[Trouble], now: datetime, backoff: timedelta
) -> bool:
    return any(t.location == location and now - t.at < backoff for t in troubles)


def _in_trouble(
    locations: Sequence[str | None], troubles: Sequence[Trouble], now: datetime, backoff: timedelta
) -> int:
    """How many of ``locations`` (all, if none are given) are in trouble now."""
    places = {t.location for t in troubles if now - t.at < backoff}
    return len(places & set(locations)) if locations else len(places)
