"""How many spot replicas beyond the target a deployment keeps, and where new ones go.

Spot capacity goes by location, and often all of it at once (in the public availability
traces a zone's capacity drops for every instance in it together). So what a spare buys
is not "one more replica" but "a location whose loss it can replace": a location holding
more replicas than there are spares is *exposed*, losing it costs strength until new
replicas are ready (the launch takes longer than the warning gives).

- Lean spares keep only the spares that leave fewer locations exposed: five replicas
  packed into one location cost a spare and are lost together all the same.
- Hedging covers the locations that have only just been (re)taken: a location's capacity
  that came back recently is far likelier to go again than one that has held for hours,
  so while the oldest ready replica in an exposed location is younger than
  ``hedge_young``, spares are added elsewhere until losing it keeps the target. When no
  other location can take them, the caller may stand on-demand replicas in
  (``SpotSizing.hedged``, ``at_risk``).

Pure functions of the fleet and the candidate locations; ``placement.fleet_plan`` calls
them on every pass.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from cic_scheduler.domain.placement import Replica

__all__ = ["SpotSizing", "kept", "place", "spot_sizing", "surplus"]


@dataclass(frozen=True)
class SpotSizing:
    spares: int
    """Spot replicas to keep beyond the target."""
    launches: list[str | None]
    """Locations of the new spot replicas."""
    at_risk: int
    """The most ready replicas in one location younger than ``hedge_on_demand``."""
    hedged: bool
    """Whether spot spares cover every young exposed location (once ready); if not, only
    on-demand replicas can stand in for ``at_risk``."""


def surplus(replicas: Sequence[Replica], keep: int) -> list[str]:
    """The ids beyond ``keep``: not yet ready first, then the newest."""
    ranked = sorted(replicas, key=lambda r: (r.ready, r.age, r.node_id))
    return [r.node_id for r in ranked[: max(0, len(replicas) - keep)]]


def kept(replicas: Sequence[Replica], keep: int) -> list[Replica]:
    """The replicas left once ``surplus(replicas, keep)`` is retired."""
    if len(replicas) <= keep:
        return list(replicas)
    gone = set(surplus(replicas, keep))
    return [r for r in replicas if r.node_id not in gone]


def place(
    count: int,
    candidates: Sequence[str | None],
    fleet: Sequence[Replica],
    strategy: Literal["spread", "packed"],
    packed_up_to: int | None = None,
) -> list[str | None]:
    """Locations for ``count`` new replicas: spread evens out the replicas per location
    (ties to the preferred, i.e. cheaper, one); packed takes the preferred one for the
    first ``packed_up_to`` replicas of the fleet (all, if None) and spreads the others,
    so spares do not share the fate of the replicas they stand in for."""
    if not candidates or count <= 0:
        return []
    load = Counter(r.location for r in fleet)
    rank = {loc: i for i, loc in reversed(list(enumerate(candidates)))}
    size = len(fleet)
    chosen = []
    for _ in range(count):
        if strategy == "packed" and (packed_up_to is None or size < packed_up_to):
            best = candidates[0]
        else:
            best = min(candidates, key=lambda loc: (load[loc], rank[loc]))
        chosen.append(best)
        load[best] += 1
        size += 1
    return chosen


def spot_sizing(
    target: int,
    spot: Sequence[Replica],
    candidates: Sequence[str | None],
    strategy: Literal["spread", "packed"],
    spares: int,
    lean: bool,
    hedge_young: timedelta,
    hedge_on_demand: timedelta,
) -> SpotSizing:
    """The spares (at most ``spares``, or up to ``target`` while hedging), the launches
    that make them up in ``candidates``, and what is left for on-demand to hedge."""
    oldest: dict[str | None, timedelta] = {}
    for r in spot:
        if r.ready:
            oldest[r.location] = max(r.age, oldest.get(r.location, r.age))

    layouts: dict[int, tuple[list[str | None], set[str | None]]] = {}

    def layout(extra: int) -> tuple[list[str | None], set[str | None]]:
        """New locations with ``extra`` spares, and the locations then exposed. Replicas
        of unknown location (None: the optimizer chose) count as one location each."""
        if extra not in layouts:
            keep = kept(spot, target + extra)
            new = place(target + extra - len(keep), candidates, keep, strategy, target)
            load = Counter(r.location for r in keep)
            load.update(new)
            exposed: set[str | None] = {
                loc for loc, n in load.items() if loc is not None and n > extra
            }
            if load[None] and extra == 0:
                exposed.add(None)
            layouts[extra] = new, exposed
        return layouts[extra]

    def risky(extra: int) -> set[str | None]:
        return {loc for loc in layout(extra)[1] if oldest.get(loc, timedelta(0)) < hedge_young}

    chosen = spares
    if lean:
        chosen = min(range(spares + 1), key=lambda extra: (len(layout(extra)[1]), extra))
    if risky(chosen):  # the fewest more spares (up to the target) that cover it, if any
        covering = (extra for extra in range(chosen + 1, max(chosen, target) + 1))
        chosen = next((extra for extra in covering if not risky(extra)), chosen)
    young = Counter(
        r.location
        for r in spot
        if r.ready and r.location is not None and oldest[r.location] < hedge_on_demand
    )
    return SpotSizing(chosen, layout(chosen)[0], max(young.values(), default=0), not risky(chosen))
