"""The simulator's latency model and its even spread of failures: pure functions, by table."""

from __future__ import annotations

import pytest
from cic_node_agent.engines.sim.faults import fails_at
from cic_node_agent.engines.sim.latency import (
    MAX_NUM_SEQS,
    LatencyModel,
    kv_cache_usage,
    load_factor,
)

SLOW = LatencyModel(ttft_overhead=0.1, prefill_per_token=0.01, inter_token_latency=0.02,
                    max_num_seqs=5, time_factor_under_load=3.0)  # fmt: skip
"""A busy engine: a full batch (5) runs three times slower than one request."""


@pytest.mark.parametrize(
    ("running", "max_num_seqs", "full_load", "expected"),
    [
        (1, 64, 2.0, 1.0),    # alone: full speed
        (0, 64, 2.0, 1.0),    # nothing running counts as alone
        (64, 64, 2.0, 2.0),   # a full batch: the full-load factor
        (100, 64, 2.0, 2.0),  # the rest wait; they do not slow the batch
        (33, 65, 3.0, 2.0),   # half way: half the extra
        (3, 5, 3.0, 2.0),
        (40, 64, 1.0, 1.0),   # the default: no slowdown at any load
        (1, 1, 3.0, 3.0),     # a batch of one is full with one request
        (0, 1, 3.0, 1.0),
    ],
)  # fmt: skip
def test_the_load_factor_grows_linearly_from_one_request_to_a_full_batch(
    running: int, max_num_seqs: int, full_load: float, expected: float
) -> None:
    assert load_factor(running, max_num_seqs, full_load) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("prompt", "running", "slowdown", "expected"),
    [
        (0, 1, 1.0, 0.1),     # the overhead alone
        (10, 1, 1.0, 0.2),    # overhead + 10 prompt tokens of prefill
        (100, 1, 1.0, 1.1),
        (10, 5, 1.0, 0.6),    # a full batch: three times slower
        (10, 3, 1.0, 0.4),    # half full: twice
        (10, 1, 2.0, 0.4),    # the slow fault doubles it
        (10, 5, 2.0, 1.2),    # and multiplies the load's factor
    ],
)  # fmt: skip
def test_time_to_first_token_is_overhead_plus_prefill_slowed_by_load_and_fault(
    prompt: int, running: int, slowdown: float, expected: float
) -> None:
    assert SLOW.time_to_first_token(prompt, running, slowdown) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("tokens", "running", "slowdown", "inter_token", "decode"),
    [
        (1, 1, 1.0, 0.02, 0.0),    # one token: no decode step after the first
        (2, 1, 1.0, 0.02, 0.02),
        (11, 1, 1.0, 0.02, 0.2),
        (11, 5, 1.0, 0.06, 0.6),   # a full batch
        (11, 1, 0.5, 0.01, 0.1),   # a slowdown under 1 speeds up
        (0, 1, 1.0, 0.02, 0.0),
    ],
)  # fmt: skip
def test_decode_takes_one_inter_token_latency_per_token_after_the_first(
    tokens: int, running: int, slowdown: float, inter_token: float, decode: float
) -> None:
    assert SLOW.inter_token(running, slowdown) == pytest.approx(inter_token)
    assert SLOW.decode_time(tokens, running, slowdown) == pytest.approx(decode)


@pytest.mark.parametrize(
    ("prompt", "tokens", "running", "slowdown", "expected"),
    [
        (10, 1, 1, 1.0, 0.2),
        (10, 11, 1, 1.0, 0.4),    # 0.2 to the first token, ten steps of 0.02
        (10, 11, 5, 1.0, 1.2),
        (10, 11, 1, 3.0, 1.2),    # the slow fault at 3 is a full batch's cost here
    ],
)  # fmt: skip
def test_request_latency_is_the_first_token_then_the_decode(
    prompt: int, tokens: int, running: int, slowdown: float, expected: float
) -> None:
    assert SLOW.request_latency(prompt, tokens, running, slowdown) == pytest.approx(expected)


@pytest.mark.parametrize("running", [0, 1, 63, 64, 1000])
def test_the_default_model_answers_at_once_at_any_load_and_slowdown(running: int) -> None:
    model = LatencyModel()
    assert model.is_zero
    assert model.max_num_seqs == MAX_NUM_SEQS
    assert model.request_latency(4000, 4000, running, slowdown=10.0) == 0.0
    assert not SLOW.is_zero


@pytest.mark.parametrize(
    "settings",
    [
        {"ttft_overhead": -0.1},
        {"prefill_per_token": -1e-9},
        {"inter_token_latency": -1.0},
        {"max_num_seqs": 0},
        {"time_factor_under_load": 0.5},
    ],
)
def test_an_impossible_latency_model_is_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        LatencyModel(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("running", "max_num_seqs", "expected"),
    [(0, 64, 0.0), (16, 64, 0.25), (64, 64, 1.0), (80, 64, 1.0), (-1, 64, 0.0)],
)
def test_kv_cache_usage_is_the_share_of_the_batch_in_use(
    running: int, max_num_seqs: int, expected: float
) -> None:
    assert kv_cache_usage(running, max_num_seqs) == expected


@pytest.mark.parametrize(
    ("rate", "first_eight"),
    [
        (0.0, "........"),
        (1.0, "XXXXXXXX"),
        (0.5, ".X.X.X.X"),
        (0.25, "...X...X"),
        (0.75, ".XXX.XXX"),
        (0.1, "........"),
    ],
)
def test_failures_are_spread_evenly_by_request_count(rate: float, first_eight: str) -> None:
    assert "".join("X" if fails_at(count, rate) else "." for count in range(1, 9)) == first_eight


@pytest.mark.parametrize("rate", [0.1, 0.2, 0.3, 0.5, 0.7, 0.01])
def test_a_rate_of_failures_fails_exactly_that_share_of_each_hundred(rate: float) -> None:
    failed = [count for count in range(1, 101) if fails_at(count, rate)]
    assert len(failed) == round(100 * rate)
    assert not fails_at(0, rate)
