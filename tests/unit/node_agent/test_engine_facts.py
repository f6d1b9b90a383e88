"""What the agent reads from the engine and how it starts it."""

from __future__ import annotations

import math

import pytest
from cic_node_agent.domain.engines import EngineLaunch, engine_command
from cic_node_agent.domain.metrics import EngineFacts, Rates, parse_metrics, quantile, rates

VLLM_METRICS = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
vllm:num_requests_waiting{engine="0",model_name="m"} 4.0
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:prompt_tokens_total{model_name="m"} 100.0
garbage line without a value
vllm:num_requests_waiting{model_name="m"} not-a-number
"""


def test_gauges_are_summed_over_engines_and_garbage_is_skipped() -> None:
    facts = parse_metrics(VLLM_METRICS)
    assert facts.requests_running == 5.0
    assert facts.requests_waiting == 4.0
    assert facts.kv_cache_usage == 0.25


def test_the_old_gpu_cache_metric_name_is_read_too() -> None:
    assert parse_metrics('vllm:gpu_cache_usage_perc{model_name="m"} 0.5\n').kv_cache_usage == 0.5


def test_vllm_shards_over_every_gpu_of_the_node() -> None:
    launch = EngineLaunch("vllm", "org/model", "0.0.0.0", 8000, 8192, gpus=4)
    argv = engine_command("python", launch)
    assert argv[:3] == ["python", "-m", "vllm.entrypoints.openai.api_server"]
    assert argv[argv.index("--tensor-parallel-size") + 1] == "4"
    assert argv[argv.index("--served-model-name") + 1] == "org/model"


def test_an_unknown_engine_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown engine"):
        engine_command("python", EngineLaunch("tgi", "m", "h", 1, 1))


def _reading(requests: float, buckets: list[tuple[str, float]], tokens: float = 0.0) -> str:
    rows = [f'vllm:request_success_total{{finished_reason="stop",model_name="m"}} {requests}',
            f'vllm:generation_tokens_total{{model_name="m"}} {tokens}']  # fmt: skip
    rows += [
        f'vllm:e2e_request_latency_seconds_bucket{{engine="0",le="{le}",model_name="m"}} {n}'
        for le, n in buckets
    ]
    return "\n".join(rows) + "\n"


def test_rates_between_two_readings_give_requests_per_second_and_p95() -> None:
    before = parse_metrics(
        _reading(10, [("1.0", 5), ("5.0", 10), ("10.0", 10), ("+Inf", 10)], tokens=100)
    )
    # 20 more requests in 10 s: 10 under 1 s, 8 in (1, 5], 2 in (5, 10].
    after = parse_metrics(
        _reading(30, [("1.0", 15), ("5.0", 28), ("10.0", 30), ("+Inf", 30)], tokens=600)
    )
    moved = rates((100.0, before), (110.0, after))
    assert moved.requests_per_second == 2.0
    assert moved.tokens_per_second == 50.0
    # rank 19 of 20 lies in (5, 10], the 1st of its 2 requests: halfway.
    assert moved.latency_p95 == pytest.approx(7.5)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        pytest.param(None, (10.0, 5.0), id="first-reading"),
        pytest.param((10.0, 5.0), (20.0, 2.0), id="engine-restarted"),
        pytest.param((10.0, 5.0), (10.0, 9.0), id="no-time-passed"),
    ],
)
def test_rates_are_empty_without_a_usable_earlier_reading(
    before: tuple[float, float] | None, after: tuple[float, float]
) -> None:
    def read(at: float, requests: float) -> tuple[float, EngineFacts]:
        return at, parse_metrics(_reading(requests, [("+Inf", requests)]))

    assert rates(None if before is None else read(*before), read(*after)) == Rates()


@pytest.mark.parametrize(
    ("buckets", "expected"),
    [
        pytest.param((), None, id="no-histogram"),
        pytest.param(((1.0, 0.0), (math.inf, 0.0)), None, id="nothing-finished"),
        pytest.param(((1.0, 0.0), (2.0, 100.0), (math.inf, 100.0)), 1.95, id="interpolated"),
        pytest.param(((1.0, 10.0), (math.inf, 100.0)), 1.0, id="beyond-the-last-bound"),
    ],
)
def test_quantile_follows_prometheus_histogram_quantile(
    buckets: tuple[tuple[float, float], ...], expected: float | None
) -> None:
    assert quantile(0.95, buckets) == (None if expected is None else pytest.approx(expected))
