"""Event-driven replay of spot availability traces through a placement policy.

A policy sees what the scheduler sees (live replicas, recent troubles) and answers with a
``FleetPlan``; the simulator launches, retires, preempts and bills. The model:

- A launch is ready ``launch_delay`` after it is requested (spot and on-demand alike).
- The cloud answers a spot launch ``fail_delay`` after the request: refused if the zone
  has no capacity by then (a ``Trouble`` for the zone at that time, nothing billed).
- A spot replica is warned ``warning_lead`` before its zone's capacity drops (at the
  earliest when the cloud has answered): a ``Trouble`` at the warning, and it leaves the
  fleet the policy sees. A ready one keeps serving until the drop; one not ready yet is
  terminated at the warning. On-demand replicas are never preempted.
- Billing runs from the request to the end (launching time included): spot at
  ``spot_price``, on-demand at 1. Retired replicas end at once.
- The policy is asked again whenever anything it could see changes (a replica ready,
  warned, refused or gone, a trouble past the history window), and at least every
  ``pass_interval`` (the scheduler also passes periodically).
- Metrics count from ``warmup`` on, so the cold start does not weigh on them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cic_scheduler.domain.placement import FleetPlan, Replica, Trouble

from .traces import Traces

__all__ = ["EPOCH", "Policy", "Result", "SimParams", "View", "simulate"]

EPOCH = datetime(2023, 2, 15, tzinfo=UTC)
"""Trace time 0 (the traces' collection date; only differences matter)."""


@dataclass(frozen=True)
class SimParams:
    target: int = 4
    launch_delay: float = 180.0
    warning_lead: float = 120.0
    spot_price: float = 0.3
    """Per replica-hour, on-demand being 1."""
    fail_delay: float = 60.0
    """How long a spot launch into a zone without capacity takes to be refused."""
    history: float = 1800.0
    """How far back troubles are shown: the scheduler loads nodes ended within its backoff."""
    warmup: float = 3600.0
    pass_interval: float = 0.0
    """Also ask the policy this often with nothing changed (0: the trace's step)."""


@dataclass(frozen=True)
class View:
    """What a policy is given on each pass."""

    target: int
    zones: tuple[str, ...]
    fleet: list[Replica]
    """Live replicas; warned (draining) ones are already gone from it."""
    troubles: list[Trouble]
    """Warnings and refused launches within ``SimParams.history``, oldest first."""


Policy = Callable[[View, datetime], FleetPlan]


@dataclass(frozen=True)
class Result:
    name: str
    full_strength: float
    """Fraction of the time with at least ``target`` replicas ready."""
    at_least_one: float
    relative_cost: float
    """Cost over that of ``target`` on-demand replicas for the same time."""
    preemptions: int
    launches: int
    failed_launches: int


@dataclass
class _Node:
    id: str
    zone: str | None
    spot: bool
    start: float
    ready_at: float
    end: float = math.inf
    warn_at: float = math.inf
    refused: bool = False
    draining: bool = False


@dataclass
class _Run:
    traces: Traces
    params: SimParams
    live: dict[str, _Node] = field(default_factory=dict)
    troubles: list[Trouble] = field(default_factory=list)
    counter: int = 0
    preemptions: int = 0
    launches: int = 0
    failed: int = 0

    def launch(self, zone: str | None, spot: bool, t: float) -> None:
        self.counter += 1
        self.launches += 1
        node = _Node(f"r{self.counter}", zone, spot, t, t + self.params.launch_delay)
        if spot:
            trace = self.traces.zones.get(zone or "")
            settled = t + self.params.fail_delay  # when the cloud has answered the request
            drop = trace.next_drop(t) if trace is not None and trace.available(t) else t
            if drop <= settled:
                node.refused, node.ready_at, node.end = True, math.inf, settled
            else:
                node.end = drop
                node.warn_at = max(settled, drop - self.params.warning_lead)
        self.live[node.id] = node

    def settle(self, t: float) -> bool:
        """Apply what is due at ``t``: refusals, warnings, ends. True if anything was."""
        changed = False
        for node in list(self.live.values()):
            if node.refused and node.end <= t:
                self.failed += 1
                self._trouble(node.zone, node.end)
            elif not node.draining and node.warn_at <= t:
                self.preemptions += 1
                node.draining = True
                self._trouble(node.zone, node.warn_at)
                if node.ready_at > node.warn_at:
                    node.end = node.warn_at
            else:
                continue
            changed = True
        for node in list(self.live.values()):
            if node.end <= t:
                del self.live[node.id]
                changed = True
        horizon = t - self.params.history
        self.troubles = [tr for tr in self.troubles if _seconds(tr.at) > horizon]
        return changed

    def _trouble(self, zone: str | None, at: float) -> None:
        if zone is not None:
            self.troubles.append(Trouble(zone, EPOCH + timedelta(seconds=at)))
            self.troubles.sort(key=lambda tr: tr.at)

    def view(self, t: float) -> View:
        fleet = [
            Replica(n.id, n.zone, n.spot, n.ready_at <= t, timedelta(seconds=t - n.start))
            for n in self.live.values()
            if not n.draining
        ]
        zones = tuple(self.traces.names)
        return View(self.params.target, zones, fleet, list(self.troubles))

    def apply(self, plan: FleetPlan, t: float) -> bool:
        for node_id in plan.retire:
            self.live.pop(node_id, None)
        for launch in plan.launches:
            self.launch(launch.location, launch.spot, t)
        return bool(plan.retire or plan.launches)

    def next_event(self, t: float) -> float:
        times = [_seconds(tr.at) + self.params.history for tr in self.troubles]
        for n in self.live.values():
            times += [n.ready_at, n.end] if n.draining else [n.ready_at, n.end, n.warn_at]
        return min((x for x in times if x > t), default=math.inf)


def _seconds(at: datetime) -> float:
    return (at - EPOCH).total_seconds()


def simulate(traces: Traces, policy: Policy, params: SimParams, name: str = "") -> Result:
    """Replay ``traces`` through ``policy`` from an empty fleet; metrics from warm-up on."""
    run = _Run(traces, params)
    end = traces.duration
    full = some = billed = 0.0
    t = 0.0
    while t < end:
        run.settle(t)
        for _ in range(16):  # until the policy is content with what it sees
            if not run.apply(policy(run.view(t), EPOCH + timedelta(seconds=t)), t):
                break
            if not run.settle(t):
                break
        nxt = min(run.next_event(t), t + (params.pass_interval or traces.gap), end)
        span = max(0.0, nxt - max(t, params.warmup))
        if span:
            ready = sum(n.ready_at <= t for n in run.live.values())
            full += span * (ready >= params.target)
            some += span * (ready >= 1)
            billed += span * sum(
                params.spot_price if n.spot else 1.0 for n in run.live.values() if not n.refused
            )
        t = nxt
    measured = max(end - params.warmup, 1e-9)
    return Result(
        name=name,
        full_strength=full / measured,
        at_least_one=some / measured,
        relative_cost=billed / (max(params.target, 1) * measured),
        preemptions=run.preemptions,
        launches=run.launches,
        failed_launches=run.failed,
    )
