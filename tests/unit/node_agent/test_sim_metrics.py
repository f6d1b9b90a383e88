"""``/metrics``: vLLM's histograms (buckets, ``_count``, ``_sum``), counters and the queue."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import httpx
import pytest
from cic_node_agent.engines.sim.app import SimConfig, create_app
from cic_node_agent.engines.sim.metrics import (
    INTER_TOKEN_LATENCY_BUCKETS,
    REQUEST_LATENCY_BUCKETS,
    TIME_TO_FIRST_TOKEN_BUCKETS,
    Histogram,
    Load,
    token_buckets,
)

MODEL = "sim-model"
Labels = tuple[tuple[str, str], ...]


def parse(text: str) -> dict[str, list[tuple[Labels, float]]]:
    """Sample rows by name, with their labels in the order written."""
    found: dict[str, list[tuple[Labels, float]]] = defaultdict(list)
    for row in text.splitlines():
        if not row or row.startswith("#"):
            continue
        name, rest = row.split("{", 1)
        labels, value = rest.rsplit("} ", 1)
        pairs = []
        for pair in labels.split(","):
            key, raw = pair.split("=", 1)
            pairs.append((key, raw.strip('"')))
        found[name].append((tuple(pairs), float(value)))
    return found


def totals(text: str) -> dict[str, float]:
    """Each series summed over its labels."""
    return {name: sum(value for _, value in rows) for name, rows in parse(text).items()}


HISTOGRAMS = {
    "vllm:time_to_first_token_seconds": TIME_TO_FIRST_TOKEN_BUCKETS,
    "vllm:inter_token_latency_seconds": INTER_TOKEN_LATENCY_BUCKETS,
    "vllm:e2e_request_latency_seconds": REQUEST_LATENCY_BUCKETS,
    "vllm:request_queue_time_seconds": REQUEST_LATENCY_BUCKETS,
    "vllm:request_prompt_tokens": (1.0, 2.0, 5.0, 10.0, 20.0, 50.0),
    "vllm:request_generation_tokens": (1.0, 2.0, 5.0, 10.0, 20.0, 50.0),
}


@pytest.fixture
async def metrics_after_five_requests() -> str:
    """Three completions (4, 5, 6 tokens), a streamed chat (3 tokens), an embedding."""
    app = create_app(SimConfig(MODEL, max_model_len=64))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as c:
        for tokens in (4, 5, 6):
            body = {"model": MODEL, "prompt": "one two three", "max_tokens": tokens}
            assert (await c.post("/v1/completions", json=body)).status_code == 200
        chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 3, "stream": True}  # fmt: skip
        assert (await c.post("/v1/chat/completions", json=chat)).status_code == 200
        embedding = {"model": MODEL, "input": "a b c d"}
        assert (await c.post("/v1/embeddings", json=embedding)).status_code == 200
        return (await c.get("/metrics")).text


@pytest.mark.parametrize("name", sorted(HISTOGRAMS))
def test_each_histogram_has_vllms_buckets_cumulative_up_to_its_count(
    metrics_after_five_requests: str, name: str
) -> None:
    text = metrics_after_five_requests
    assert f"# TYPE {name} histogram" in text
    samples = parse(text)
    buckets = samples[f"{name}_bucket"]
    assert [labels[0] for labels, _ in buckets] == [("engine", "0")] * len(buckets)
    assert [labels[2] for labels, _ in buckets] == [("model_name", MODEL)] * len(buckets)
    bounds = [dict(labels)["le"] for labels, _ in buckets]
    assert bounds == [repr(float(b)) for b in HISTOGRAMS[name]] + ["+Inf"]
    counts = [value for _, value in buckets]
    assert counts == sorted(counts)  # cumulative: never decreasing
    [(_, count)] = samples[f"{name}_count"]
    [(_, total)] = samples[f"{name}_sum"]
    assert counts[-1] == count
    assert total >= 0


def test_a_histogram_counts_each_request_once(metrics_after_five_requests: str) -> None:
    samples = parse(metrics_after_five_requests)

    def value(name: str) -> float:
        [(_, found)] = samples[name]
        return found

    for name in HISTOGRAMS:
        if name != "vllm:inter_token_latency_seconds":
            assert value(f"{name}_count") == 5, name
    # One gap after each token but the first: 3 + 4 + 5 + 2 (the embedding has none).
    assert value("vllm:inter_token_latency_seconds_count") == 14
    assert value("vllm:request_generation_tokens_sum") == 4 + 5 + 6 + 3
    assert value("vllm:request_prompt_tokens_sum") == 3 * 3 + 1 + 4
    assert value("vllm:generation_tokens_total") == 18
    assert value("vllm:prompt_tokens_total") == 14
    reasons = {
        dict(labels)["finished_reason"]: n for labels, n in samples["vllm:request_success_total"]
    }
    assert reasons == {"stop": 1.0, "length": 4.0, "abort": 0.0, "error": 0.0, "repetition": 0.0}


async def test_the_gauges_and_counters_follow_finished_requests() -> None:
    app = create_app(SimConfig(MODEL, max_model_len=64))
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}]}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as c:
        before = totals((await c.get("/metrics")).text)
        await c.post("/v1/chat/completions", json={**chat, "max_tokens": 3})
        await c.post("/v1/chat/completions", json={**chat, "max_tokens": 4, "stream": True})
        text = (await c.get("/metrics")).text
    after = totals(text)
    assert after["vllm:prompt_tokens_total"] - before["vllm:prompt_tokens_total"] == 4
    assert after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"] == 7
    assert after["vllm:request_success_total"] - before["vllm:request_success_total"] == 2
    assert after["vllm:num_requests_running"] == 0
    assert after["vllm:num_requests_waiting"] == 0
    assert after["vllm:kv_cache_usage_perc"] == 0
    assert f'vllm:num_requests_running{{engine="0",model_name="{MODEL}"}} 0.0' in text
    assert "# TYPE vllm:kv_cache_usage_perc gauge" in text
    assert "# TYPE vllm:request_success_total counter" in text
    assert "# HELP vllm:prompt_tokens_total " in text


def test_vllms_bucket_boundaries_are_pinned() -> None:
    assert (TIME_TO_FIRST_TOKEN_BUCKETS[0], TIME_TO_FIRST_TOKEN_BUCKETS[-1]) == (0.001, 2560.0)
    assert len(TIME_TO_FIRST_TOKEN_BUCKETS) == 22
    assert (INTER_TOKEN_LATENCY_BUCKETS[0], INTER_TOKEN_LATENCY_BUCKETS[-1]) == (0.01, 80.0)
    assert len(INTER_TOKEN_LATENCY_BUCKETS) == 19
    assert (REQUEST_LATENCY_BUCKETS[0], REQUEST_LATENCY_BUCKETS[-1]) == (0.3, 7680.0)
    assert len(REQUEST_LATENCY_BUCKETS) == 21


@pytest.mark.parametrize(
    ("max_model_len", "expected"),
    [
        (1, (1.0,)),
        (4, (1.0, 2.0)),
        (64, (1.0, 2.0, 5.0, 10.0, 20.0, 50.0)),
        (100, (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)),
    ],
)
def test_token_buckets_are_one_two_five_up_to_the_context(
    max_model_len: int, expected: tuple[float, ...]
) -> None:
    assert token_buckets(max_model_len) == expected


def test_a_value_on_a_boundary_falls_in_that_bucket() -> None:
    histogram = Histogram("x_seconds", "A test.", (1.0, 2.0))
    histogram.observe(1.0)
    histogram.observe(1.5, times=2)
    histogram.observe(5.0)
    assert histogram.lines('engine="0",model_name="m"') == [
        "# HELP x_seconds A test.",
        "# TYPE x_seconds histogram",
        'x_seconds_bucket{engine="0",le="1.0",model_name="m"} 1.0',
        'x_seconds_bucket{engine="0",le="2.0",model_name="m"} 3.0',
        'x_seconds_bucket{engine="0",le="+Inf",model_name="m"} 4.0',
        'x_seconds_count{engine="0",model_name="m"} 4.0',
        'x_seconds_sum{engine="0",model_name="m"} 9.0',
    ]


async def test_requests_beyond_max_num_seqs_wait_for_a_slot() -> None:
    load = Load(MODEL, max_num_seqs=1, max_model_len=64)
    await load.enter(3, time.perf_counter())
    second = asyncio.create_task(load.enter(2, time.perf_counter()))
    await asyncio.sleep(0)
    assert (load.running, load.waiting) == (1, 1)
    text = load.exposition()
    assert f'vllm:num_requests_waiting{{engine="0",model_name="{MODEL}"}} 1.0' in text
    assert f'vllm:kv_cache_usage_perc{{engine="0",model_name="{MODEL}"}} 1.0' in text
    load.leave()
    await second
    assert (load.running, load.waiting, load.prompt_tokens) == (1, 0, 5)
    load.leave(aborted=True)
    assert (load.running, load.finished["abort"]) == (0, 1)


def test_a_model_name_is_escaped_in_labels() -> None:
    load = Load('we"ird\\model', max_num_seqs=4, max_model_len=8)
    assert 'model_name="we\\"ird\\\\model"' in load.exposition()
