"""Spot-first placement: how many replicas of each market, where, and which to retire.

One pure function, ``fleet_plan``, decides for a deployment from the replicas it has,
the places it may use and the places that recently failed it. The scheduler runs it on
every pass, and ``bench/spot_sim`` replays spot availability traces through the very
same function.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from cic_scheduler.domain.spot_hedging import SpotSizing, place, spot_sizing, surplus

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
    """Spot replicas beyond the target, so one preemption never costs strength (with
    ``lean_spares``, at most this many; ``hedge_young`` may add more for a while)."""
    backoff: timedelta = timedelta(minutes=30)
    """How long a location that preempted us or had no capacity is avoided."""
    cover: Cover = "unavailable"
    """``spot_with_fallback``: the spot replicas on-demand ones stand in for: those that
    cannot be had (no usable location), or also those not ready yet (SkyServe's dynamic
    fallback: dearer, but a refused or lost spot launch then costs no strength)."""
    lean_spares: bool = False
    """Keep only the spares that leave fewer locations *exposed* (holding more replicas
    than there are spares): a location's spot capacity tends to go all at once, and a
    spare that cannot replace a whole location buys nothing (see ``spot_hedging``)."""
    hedge_young: timedelta = timedelta(0)
    """While an exposed location's oldest ready replica is younger than this (0: never),
    more spares (up to the target) go to other locations until losing it keeps the
    target: capacity that came back recently is the likeliest to go again."""
    hedge_on_demand: timedelta = timedelta(0)
    """``spot_with_fallback``: when no other location can take those spares, on-demand
    replicas stand in for what losing the location would take while it is younger than
    this (0: never), and stay until the spot spares are ready. Shorter than
    ``hedge_young``: on-demand costs several times what spot does."""
    probe: timedelta = timedelta(0)
    """``spot_with_fallback``: while every location is in trouble (on-demand covering),
    ask for spot again, one location at a time, at the one troubled longest ago once
    that is this long ago (0: not before the backoff is over). A refused launch costs
    nothing, and capacity often comes back sooner than the backoff."""


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
    the one tuned on the public spot traces (``bench/spot_sim``): lean spares, locations
    hedged while younger than 4 hours, with on-demand for 2 hours where spot cannot
    (unless the deployment wants no spares at all),
    spot probed after 15 minutes while every location is in trouble, on-demand standing
    in for every spot replica not ready yet, and a location that failed us avoided for
    30 minutes."""
    if spot != "spot_with_fallback":
        return PlacementPolicy(strategy=strategy, spot=spot, spot_spares=spot_spares)
    return PlacementPolicy(
        strategy=strategy,
        spot=spot,
        spot_spares=spot_spares,
        backoff=timedelta(minutes=30),
        cover="unready",
        lean_spares=True,
        hedge_young=timedelta(hours=4) if spot_spares else timedelta(0),
        hedge_on_demand=timedelta(hours=2) if spot_spares else timedelta(0),
        probe=timedelta(minutes=15),
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
    - ``spot_only``: ``target`` + spares on spot, in locations not in trouble (how many
      spares and where: ``spot_hedging``).
    - ``spot_with_fallback``: as spot_only, plus on-demand cover for the spot replicas
      that cannot be had while no spot location is usable (see ``PlacementPolicy.cover``,
      ``hedge_young`` and ``probe`` for more); the cover is retired once spot replicas
      are ready again, not before.
    """
    spot = [r for r in fleet if r.spot]
    on_demand = [r for r in fleet if not r.spot]
    usable = available_locations(locations or [None], troubles, now, policy.backoff)
    spot_usable = [
        loc for loc in usable if loc is None or not _troubled(loc, troubles, now, policy.backoff)
    ]
    if spot_usable or policy.spot == "spot_only":
        spot_locations = spot_usable or usable
    else:  # every location in trouble: on-demand covers, spot is probed or waited for
        calm = now - max(t.at for t in troubles if t.location == usable[0])
        spot_locations = usable[:1] if timedelta(0) < policy.probe <= calm else []
    sizing = SpotSizing(0, [], 0, True)
    if policy.spot != "on_demand" and target > 0:
        sizing = spot_sizing(
            target,
            spot,
            spot_locations,
            policy.strategy,
            policy.spot_spares,
            policy.lean_spares,
            policy.hedge_young,
            policy.hedge_on_demand,
        )
    want_spot = target + sizing.spares if policy.spot != "on_demand" else 0
    if policy.spot == "spot_with_fallback" and target > 0:
        spot_ready = sum(r.ready for r in spot)
        # Spot replicas that will come: pending or launched now, in places not in trouble.
        spot_coming = len(spot) - spot_ready + len(sizing.launches) if spot_usable else 0
        want_od = 0 if spot_ready >= target else max(0, target - spot_ready - spot_coming)
        if policy.cover == "unready":
            want_od = max(want_od, target - spot_ready)
        # What losing the young location would leave short: on-demand launched for it when
        # no spot spare can hedge it, and kept until the spot spares that do are ready.
        at_risk = max(0, target - (spot_ready - sizing.at_risk))
        if not sizing.hedged:
            want_od = max(want_od, at_risk)
        # Cover already there stays until the spot replicas it stands in for are ready.
        keep_od = max(want_od, target - spot_ready, at_risk)
    else:
        want_od = keep_od = target if policy.spot == "on_demand" else 0
    plan = FleetPlan()
    plan.launches.extend(Launch(loc, spot=True) for loc in sizing.launches)
    od_locations = list(locations) or [None]
    for loc in place(max(0, want_od - len(on_demand)), od_locations, on_demand, policy.strategy):
        plan.launches.append(Launch(loc, spot=False))
    plan.retire.extend(surplus(on_demand, keep_od))
    plan.retire.extend(surplus(spot, want_spot))
    return plan


def _troubled(
    location: str, troubles: Sequence[Trouble], now: datetime, backoff: timedelta
) -> bool:
    return any(t.location == location and now - t.at < backoff for t in troubles)
