"""Spot trace replay: synthetic traces with known answers, then the public AWS traces."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
from cic_scheduler.domain import placement
from cic_scheduler.domain.placement import PlacementPolicy

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:  # ``bench`` lives at the repository root, outside the packages
    sys.path.insert(0, str(ROOT))

from bench.spot_sim import __main__ as cli  # noqa: E402
from bench.spot_sim.__main__ import CIC_POLICY, scheduler_policy  # noqa: E402
from bench.spot_sim.simulator import Result, SimParams, simulate  # noqa: E402
from bench.spot_sim.spothedge import SpotHedge  # noqa: E402
from bench.spot_sim.traces import Traces, load_traces, write_trace  # noqa: E402

GAP = 60.0
HOURS = 6
UP = [1] * (HOURS * 60)
DEFAULTS = PlacementPolicy(spot="spot_with_fallback")
CIC_POLICIES = [pytest.param(DEFAULTS, id="scheduler-defaults"), pytest.param(CIC_POLICY, id="cic")]
REAL = ROOT.parent / "shared/spot-traces/availability/1-node/aws-02-15-2023"


def traces(tmp_path: Path, **zones: list[int]) -> Traces:
    for zone, data in zones.items():
        write_trace(tmp_path, zone, data, GAP)
    return load_traces(tmp_path)


def outage(start_h: float, end_h: float) -> list[int]:
    """Up, except from ``start_h`` to ``end_h`` hours."""
    return [0 if start_h * 60 <= i < end_h * 60 else 1 for i in range(len(UP))]


def run_cic(t: Traces, policy: PlacementPolicy, params: SimParams) -> Result:
    history = policy.backoff.total_seconds()
    return simulate(t, scheduler_policy(policy), replace(params, history=history))


def test_the_simulator_drives_the_schedulers_own_function() -> None:
    assert vars(cli)["fleet_plan"] is placement.fleet_plan


def test_traces_round_trip_and_name_zones_before_the_first_underscore(tmp_path: Path) -> None:
    t = traces(tmp_path, **{"us-east-1a": [1, 1, 0, 0, 1], "us-west-2b": [0, 1, 1, 1, 1]})
    assert t.names == ["us-east-1a", "us-west-2b"]
    assert t.gap == GAP
    assert t.duration == 5 * GAP
    assert t.best_zone() == "us-west-2b"
    zone = t.zones["us-east-1a"]
    assert zone.available(GAP * 1.5)
    assert not zone.available(GAP * 2)
    assert zone.next_drop(0) == 2 * GAP
    assert zone.next_drop(3 * GAP) == float("inf")


def test_a_directory_without_traces_or_with_mixed_steps_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_traces(tmp_path)
    write_trace(tmp_path, "a", [1], 60)
    write_trace(tmp_path, "b", [1], 120)
    with pytest.raises(ValueError, match="gap_seconds"):
        load_traces(tmp_path)


@pytest.mark.parametrize("policy", CIC_POLICIES)
def test_always_available_spot_costs_the_spot_price_of_the_spares_too(
    tmp_path: Path, policy: PlacementPolicy
) -> None:
    t = traces(tmp_path, z1=UP, z2=UP, z3=UP)
    params = SimParams(target=2, spot_price=0.3)
    result = run_cic(t, policy, params)
    assert result.full_strength == 1.0
    assert result.at_least_one == 1.0
    assert result.relative_cost == pytest.approx(0.3 * (2 + 1) / 2)
    assert result.preemptions == result.failed_launches == 0


def test_all_on_demand_costs_one_and_spothedge_matches_on_calm_spot(tmp_path: Path) -> None:
    t = traces(tmp_path, z1=UP, z2=UP, z3=UP)
    params = SimParams(target=2)
    on_demand = simulate(t, scheduler_policy(PlacementPolicy()), params)
    assert (on_demand.full_strength, on_demand.relative_cost, on_demand.launches) == (1, 1, 2)
    hedge = simulate(t, SpotHedge(), params)
    assert hedge.full_strength == 1.0
    assert hedge.relative_cost == pytest.approx(0.3 * 3 / 2)


@pytest.mark.parametrize("policy", CIC_POLICIES)
def test_a_warned_zone_is_replaced_elsewhere_and_the_spare_keeps_strength(
    tmp_path: Path, policy: PlacementPolicy
) -> None:
    t = traces(tmp_path, z1=outage(2, 4), z2=UP, z3=UP)
    result = run_cic(t, policy, SimParams(target=2))
    assert result.preemptions == 1
    assert result.full_strength == 1.0
    assert result.relative_cost < 1.0


@pytest.mark.parametrize("policy", CIC_POLICIES)
def test_a_zone_without_capacity_refuses_and_the_launch_goes_elsewhere(
    tmp_path: Path, policy: PlacementPolicy
) -> None:
    t = traces(tmp_path, z1=[0] * len(UP), z2=UP, z3=UP)
    result = run_cic(t, policy, SimParams(target=2))
    assert result.failed_launches >= 1
    assert result.full_strength == 1.0


@pytest.mark.parametrize("policy", CIC_POLICIES)
@pytest.mark.parametrize(("launch_delay", "lead"), [(180, 120), (180, 0), (120, 300)])
def test_when_every_zone_goes_on_demand_covers_after_the_launch_delay_less_the_lead(
    tmp_path: Path, policy: PlacementPolicy, launch_delay: float, lead: float
) -> None:
    down = outage(2, 4)
    t = traces(tmp_path, z1=down, z2=down, z3=down)
    params = SimParams(target=2, launch_delay=launch_delay, warning_lead=lead)
    result = run_cic(t, policy, params)
    measured = t.duration - params.warmup
    dip = max(0.0, launch_delay - lead)
    assert result.full_strength == pytest.approx(1 - dip / measured)
    assert result.preemptions == 3
    assert result.relative_cost > 0.45  # two on-demand replicas for the two hours


def test_a_location_just_back_is_hedged_so_its_next_drop_costs_nothing(tmp_path: Path) -> None:
    """One zone that comes back and goes again: the first drop costs the launch delay less
    the warning to both; CIC then hedges the young zone with on-demand, the defaults do not."""
    flapping = [0 if 180 <= i < 195 or 225 <= i < 240 else 1 for i in range(len(UP) + 120)]
    t = traces(tmp_path, z1=flapping)
    params = SimParams(target=2)
    dip = params.launch_delay - params.warning_lead
    measured = t.duration - params.warmup
    below = {
        name: (1 - run_cic(t, policy, params).full_strength) * measured
        for name, policy in [("cic", CIC_POLICY), ("defaults", DEFAULTS)]
    }
    assert below["cic"] == pytest.approx(dip)
    assert below["defaults"] == pytest.approx(2 * dip)


def test_spot_in_one_zone_has_nothing_while_the_zone_has_no_capacity(tmp_path: Path) -> None:
    t = traces(tmp_path, z1=outage(2, 4), z2=UP)
    one_zone = scheduler_policy(PlacementPolicy(spot="spot_only", spot_spares=0), only="z1")
    result = simulate(t, one_zone, SimParams(target=2))
    measured = t.duration - SimParams().warmup
    assert result.at_least_one <= 1 - 2 * 3600 / measured
    assert result.failed_launches > 0


def test_the_command_prints_the_parameters_and_a_row_per_contender(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    traces(tmp_path, z1=outage(2, 3), z2=UP, z3=outage(4, 5))
    cli.main([str(tmp_path), "--target", "2", "--spot-price", "0.25"])
    out = capsys.readouterr().out
    assert "spot at 0.25 x on-demand" in out
    for name in ["all on-demand", "spot, one zone (z2)", "SpotHedge", "| CIC |", "CIC, untuned"]:
        assert name in out


@pytest.mark.skipif(not REAL.is_dir(), reason=f"public spot traces not checked out at {REAL}")
def test_on_the_public_aws_traces_cic_meets_the_goals_and_beats_spothedge_on_both() -> None:
    results = {r.name: r for r in cli.run(load_traces(REAL), SimParams())}
    cic, hedge = results["CIC"], results["SpotHedge"]
    assert cic.full_strength >= 0.999
    assert cic.relative_cost <= 0.5
    assert cic.full_strength > hedge.full_strength
    assert cic.relative_cost < hedge.relative_cost
    assert hedge.full_strength < 0.999
    assert results["CIC, untuned"].full_strength < cic.full_strength
    assert results["all on-demand"].relative_cost == 1.0
