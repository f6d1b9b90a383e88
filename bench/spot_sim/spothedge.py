"""SpotHedge, SkyServe's spot policy, re-implemented from its documented behaviour.

Sources (behaviour only; no code of theirs is used):

- SkyServe docs, "Using Spot Instances for Serving"
  (https://docs.skypilot.co/en/latest/serving/spot-policy.html): with
  ``dynamic_ondemand_fallback``, on-demand replicas are provisioned for the spot replicas
  that are not ready ("when the target number is 2 and no spot replicas are ready, SkyServe
  will provision 2 on-demand replicas") and scaled down once spot replicas are ready;
  spot keeps being retried in other regions and clouds meanwhile.
- Mao, Xia et al., "SkyServe: Serving AI Models across Regions and Clouds with Spot
  Instances" (arXiv 2411.01438, EuroSys '25), the SpotHedge policy: spread spot replicas
  over failure domains, overprovision ``num_overprovision`` spot replicas beyond the target,
  fall back to on-demand dynamically. Its dynamic fallback placer keeps every location
  either active or preempted, places a new spot replica in an active location, preferring
  unused and then cheaper ones, marks a location preempted when a spot replica there is
  preempted, and resets all locations to active when fewer than two remain active.

Choices where the sources leave room, made in SpotHedge's favour:

- ``num_overprovision`` defaults to 1 (the paper overprovisions by a small constant; the
  docs leave it unset), the same as CIC's one spot spare, so the two pay alike.
- A launch refused for lack of capacity marks its location preempted too: otherwise the
  placer would retry the same cheapest dead location until a reset.
- It learns of a preemption at the warning, as CIC does (SkyServe itself only notices the
  lost replica); the warned replica still serves until the capacity goes.
- Locations all cost the same here, so "cheapest" ties are broken by name.
"""

from __future__ import annotations

from datetime import datetime

from cic_scheduler.domain.placement import FleetPlan, Launch, Replica, Trouble

from .simulator import View

__all__ = ["SpotHedge"]


class SpotHedge:
    """A stateful policy: the placer's active/preempted marks live across passes."""

    def __init__(self, num_overprovision: int = 1, min_active: int = 2) -> None:
        self.num_overprovision = num_overprovision
        self.min_active = min_active
        self.active: set[str] | None = None
        self.seen: set[Trouble] = set()

    def __call__(self, view: View, now: datetime) -> FleetPlan:
        self._observe(view)
        spot = [r for r in view.fleet if r.spot]
        on_demand = [r for r in view.fleet if not r.spot]
        want_spot = view.target + self.num_overprovision if view.target else 0
        spot_ready = sum(r.ready for r in spot)
        # Dynamic on-demand fallback: cover every target replica spot does not serve yet.
        want_od = max(0, view.target - spot_ready)
        plan = FleetPlan()
        used = {r.location for r in spot}
        for _ in range(max(0, want_spot - len(spot))):
            location = self._place(view.zones, used)
            used.add(location)
            plan.launches.append(Launch(location, spot=True))
        for _ in range(max(0, want_od - len(on_demand))):
            plan.launches.append(Launch(view.zones[0] if view.zones else None, spot=False))
        plan.retire.extend(_surplus(on_demand, want_od))
        plan.retire.extend(_surplus(spot, want_spot))
        return plan

    def _observe(self, view: View) -> None:
        """Mark the locations of new preemptions (and refusals); reset when too few stay."""
        if self.active is None:
            self.active = set(view.zones)
        for trouble in view.troubles:
            if trouble not in self.seen:
                self.active.discard(trouble.location)
        self.seen = set(view.troubles)  # older ones have left the window for good
        if len(self.active) < self.min_active:
            self.active = set(view.zones)

    def _place(self, zones: tuple[str, ...], used: set[str | None]) -> str | None:
        """Active first, then unused, then cheapest (the listed order)."""
        active = self.active or set(zones)
        ranked = sorted(zones, key=lambda z: (z not in active, z in used, zones.index(z)))
        return ranked[0] if ranked else None


def _surplus(replicas: list[Replica], keep: int) -> list[str]:
    """Beyond ``keep``: those not ready first, then the newest."""
    ranked = sorted(replicas, key=lambda r: (r.ready, r.age, r.node_id))
    return [r.node_id for r in ranked[: max(0, len(replicas) - keep)]]
