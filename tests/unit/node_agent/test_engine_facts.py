"""What the agent reads from the engine and how it starts it."""

from __future__ import annotations

import pytest
from cic_node_agent.domain.engines import EngineLaunch, engine_command
from cic_node_agent.domain.metrics import parse_metrics

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
