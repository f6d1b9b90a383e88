"""Replay spot availability traces through CIC's placement policy and its rivals.

Run from the repository root (``bench`` is a namespace package, so ``-m`` finds it)::

    uv run python -m bench.spot_sim [TRACE_DIR] [--target 4] [--launch-delay 180]
        [--warning-lead 120] [--spot-price 0.3] [--fail-delay 60]

``TRACE_DIR`` holds one JSON trace per zone (format: ``traces``); it defaults to
``../shared/spot-traces/availability/1-node/aws-02-15-2023`` next to the repository: 9
AWS zones, one V100 each, sampled every 195 s for about two months. The policies are the
scheduler's own ``fleet_plan`` (imported, not copied) and a re-implementation of
SkyServe's SpotHedge; the model is described in ``simulator``. Prints the parameters and
a markdown table: time at full strength (``target`` replicas ready), time with at least
one ready, cost relative to ``target`` on-demand replicas, spot preemptions, and launches
requested (those refused for lack of capacity in brackets).

The contenders (all but SpotHedge are ``fleet_plan``):

- all on-demand: ``spot="on_demand"``.
- spot, one zone: ``spot="spot_only"``, no spare, in the zone with the most spot capacity
  over the whole trace (chosen in hindsight: the baseline's best case).
- SpotHedge: see ``spothedge``.
- CIC: ``spot="spot_with_fallback"`` over every zone (all priced alike, so in name order)
  with ``CIC_POLICY``, the settings tuned on the AWS traces.
- CIC, untuned: ``PlacementPolicy(spot="spot_with_fallback")`` with its dataclass defaults.

Each is shown the troubles within its own ``backoff``, as the scheduler's store loads the
nodes ended within it (SpotHedge keeps its own marks and only needs the new ones).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from cic_scheduler.domain.placement import (
    FleetPlan,
    PlacementPolicy,
    deployment_policy,
    fleet_plan,
)

from .simulator import Policy, Result, SimParams, View, simulate
from .spothedge import SpotHedge
from .traces import Traces, load_traces

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TRACES = ROOT.parent / "shared/spot-traces/availability/1-node/aws-02-15-2023"

CIC_POLICY = deployment_policy("spot_with_fallback", "spread", 1)
"""What the scheduler runs for a ``spot_with_fallback`` deployment with one spare."""


@dataclass(frozen=True)
class Contender:
    name: str
    policy: Policy
    history: timedelta
    """How far back the policy is shown troubles."""


def scheduler_policy(policy: PlacementPolicy, only: str | None = None) -> Policy:
    """``fleet_plan`` itself, over the zones (or just ``only``)."""

    def decide(view: View, now: datetime) -> FleetPlan:
        locations = [only] if only is not None else list(view.zones)
        return fleet_plan(view.target, view.fleet, locations, view.troubles, now, policy)

    return decide


def contenders(traces: Traces, cic: PlacementPolicy = CIC_POLICY) -> list[Contender]:
    on_demand = PlacementPolicy(spot="on_demand")
    one_zone = PlacementPolicy(spot="spot_only", spot_spares=0)
    defaults = PlacementPolicy(spot="spot_with_fallback")
    best = traces.best_zone()
    return [
        Contender("all on-demand", scheduler_policy(on_demand), on_demand.backoff),
        Contender(f"spot, one zone ({best})", scheduler_policy(one_zone, best), one_zone.backoff),
        Contender("SpotHedge", SpotHedge(), defaults.backoff),
        Contender("CIC", scheduler_policy(cic), cic.backoff),
        Contender("CIC, untuned", scheduler_policy(defaults), defaults.backoff),
    ]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.spot_sim",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("trace_dir", nargs="?", type=Path, default=DEFAULT_TRACES)
    parser.add_argument("--target", type=int, default=4, help="replicas the deployment needs")
    parser.add_argument("--launch-delay", type=float, default=180.0, help="seconds to ready")
    parser.add_argument("--warning-lead", type=float, default=120.0, help="seconds of notice")
    parser.add_argument("--spot-price", type=float, default=0.3, help="on-demand being 1")
    parser.add_argument("--fail-delay", type=float, default=60.0, help="seconds to a refusal")
    return parser.parse_args(argv)


def run(traces: Traces, params: SimParams) -> list[Result]:
    """Every contender over the same traces, each shown troubles within its backoff."""
    return [
        simulate(traces, c.policy, replace(params, history=c.history.total_seconds()), c.name)
        for c in contenders(traces)
    ]


def table(results: list[Result]) -> str:
    rows = [
        "| policy | full strength | ≥ 1 replica | cost vs on-demand | preemptions | launches |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rows.append(
            f"| {r.name} | {r.full_strength:.3%} | {r.at_least_one:.3%} "
            f"| {r.relative_cost:.3f} | {r.preemptions} | {r.launches} ({r.failed_launches}) |"
        )
    return "\n".join(rows)


def describe(traces: Traces, params: SimParams, trace_dir: Path) -> str:
    days = traces.duration / 86400
    p = CIC_POLICY
    return "\n".join(
        [
            f"- traces: `{trace_dir}`: {len(traces.zones)} zones, {days:.1f} days, "
            f"one sample every {traces.gap:g} s",
            f"- target {params.target} ready replicas; launch delay {params.launch_delay:g} s; "
            f"preemption warning {params.warning_lead:g} s ahead; spot at "
            f"{params.spot_price:g} x on-demand; refused launches answered after "
            f"{params.fail_delay:g} s; first {params.warmup:g} s not counted",
            f"- CIC: `PlacementPolicy(spot={p.spot!r}, spot_spares={p.spot_spares}, "
            f"backoff={p.backoff}, cover={p.cover!r}, lean_spares={p.lean_spares}, "
            f"hedge_young={p.hedge_young}, hedge_on_demand={p.hedge_on_demand}, "
            f"probe={p.probe})`",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    traces = load_traces(args.trace_dir)
    params = SimParams(
        target=args.target,
        launch_delay=args.launch_delay,
        warning_lead=args.warning_lead,
        spot_price=args.spot_price,
        fail_delay=args.fail_delay,
    )
    started = time.perf_counter()
    results = run(traces, params)
    print(describe(traces, params, args.trace_dir))
    print()
    print(table(results))
    print(f"\n({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
