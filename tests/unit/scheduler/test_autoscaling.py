"""Autoscaling decisions: target tracking, bounds and hysteresis, one row per branch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cic_scheduler.domain.autoscaling import AutoscalePolicy, Load, Proposal, autoscale

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
POLICY = AutoscalePolicy(name="in_flight", min_replicas=1, max_replicas=6, target=8)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("current", "load", "last", "expected"),
    [
        pytest.param(2, Load(2, 16, 0), None, (2, None), id="on-target"),
        pytest.param(2, Load(2, 30, 10), None, (2, Proposal(5, NOW)), id="upscale-proposed"),
        pytest.param(2, Load(2, 30, 10), Proposal(5, ago(10)), (2, Proposal(5, ago(10))),
                     id="upscale-waits-its-delay"),
        pytest.param(2, Load(2, 30, 10), Proposal(5, ago(30)), (5, None), id="upscale-applied"),
        pytest.param(2, Load(2, 300, 0), Proposal(6, ago(31)), (6, None), id="clamped-to-max"),
        pytest.param(4, Load(4, 0, 0), Proposal(1, ago(299)), (4, Proposal(1, ago(299))),
                     id="downscale-waits-longer"),
        pytest.param(4, Load(4, 0, 0), Proposal(1, ago(300)), (1, None), id="down-to-min"),
        pytest.param(2, Load(2, 30, 10), Proposal(1, ago(400)), (2, Proposal(5, NOW)),
                     id="direction-change-restarts-the-clock"),
        pytest.param(2, Load(2, 16, 0), Proposal(5, ago(20)), (2, None),
                     id="load-back-to-target-forgets-the-proposal"),
    ],
)  # fmt: skip
def test_in_flight_target_tracking(
    current: int, load: Load, last: Proposal | None, expected: tuple[int, Proposal | None]
) -> None:
    assert autoscale(current, load, last, NOW, POLICY) == expected


def test_queue_policy_weighs_waiting_double() -> None:
    queue = AutoscalePolicy(name="queue", min_replicas=1, max_replicas=10, target=8,
                            upscale_delay=timedelta(0))  # fmt: skip
    assert autoscale(1, Load(1, 8, 8), None, NOW, queue) == (3, None)


def test_without_a_policy_the_operator_count_holds() -> None:
    assert autoscale(3, Load(3, 1000, 1000), None, NOW, AutoscalePolicy()) == (3, None)


def test_an_unknown_policy_is_refused() -> None:
    with pytest.raises(KeyError):
        autoscale(1, Load(1, 0, 0), None, NOW, AutoscalePolicy(name="magic"))


@pytest.mark.parametrize(
    ("name", "current", "load", "expected"),
    [
        pytest.param("requests_per_second", 2, Load(2, 0, 0, requests_per_second=22), 5,
                     id="rps-per-replica-tracked"),
        pytest.param("requests_per_second", 4, Load(4, 0, 0, requests_per_second=0), 1,
                     id="rps-idle-shrinks-to-min"),
        pytest.param("latency", 2, Load(2, 4, 0, latency_p95=25.0), 5,
                     id="latency-over-target-grows-in-proportion"),
        pytest.param("latency", 4, Load(4, 4, 0, latency_p95=2.0), 1,
                     id="latency-under-target-follows-work-in-hand"),
        pytest.param("latency", 2, Load(2, 16, 0, latency_p95=None), 2,
                     id="latency-unknown-follows-work-in-hand"),
    ],
)  # fmt: skip
def test_request_rate_and_latency_policies(
    name: str, current: int, load: Load, expected: int
) -> None:
    policy = AutoscalePolicy(name=name, min_replicas=1, max_replicas=8, target=8, target_rps=5,
                             target_p95=10, upscale_delay=timedelta(0),
                             downscale_delay=timedelta(0))  # fmt: skip
    assert autoscale(current, load, None, NOW, policy) == (expected, None)
