"""Reading the engine's Prometheus ``/metrics`` into the facts a heartbeat carries.

Gauges are read as they are; counters and the end-to-end latency histogram are turned
into rates between two readings (``rates``): generated tokens and finished requests per
second, and the p95 latency of the requests that finished in between.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["EngineFacts", "Rates", "parse_metrics", "quantile", "rates"]

_SUMMED = {
    "vllm:num_requests_running": "requests_running",
    "vllm:num_requests_waiting": "requests_waiting",
    "vllm:kv_cache_usage_perc": "kv_cache_usage",
    "vllm:gpu_cache_usage_perc": "kv_cache_usage",  # the name before vLLM 0.10
    "vllm:generation_tokens_total": "generation_tokens_total",
    "vllm:request_success_total": "requests_total",
}
_LATENCY = "vllm:e2e_request_latency_seconds_bucket"


@dataclass(frozen=True)
class EngineFacts:
    requests_running: float = 0.0
    requests_waiting: float = 0.0
    kv_cache_usage: float = 0.0
    generation_tokens_total: float = 0.0
    requests_total: float = 0.0
    """Finished requests since the engine started (a counter)."""
    latency_buckets: tuple[tuple[float, float], ...] = ()
    """End-to-end latency: ``(upper bound in s, cumulative count)``, ``inf`` last."""


@dataclass(frozen=True)
class Rates:
    tokens_per_second: float = 0.0
    requests_per_second: float = 0.0
    latency_p95: float | None = None
    """Seconds; None when no request finished between the readings."""


def parse_metrics(text: str) -> EngineFacts:
    """Sum each count over its label sets (KV-cache usage: the highest); lines we do
    not know are ignored.

    Malformed lines are skipped rather than failing the heartbeat: a partial reading
    is still a reading.
    """
    values: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        field = _SUMMED.get(name)
        if field is None and name != _LATENCY:
            continue
        try:
            value = float(line.rsplit(" ", 1)[-1])
        except ValueError:
            continue
        if field is None:
            bound = _le(line)
            if bound is not None:
                buckets[bound] = buckets.get(bound, 0.0) + value
        elif field == "kv_cache_usage":  # a fraction per engine: the fullest one counts
            values[field] = max(values.get(field, 0.0), value)
        else:
            values[field] = values.get(field, 0.0) + value
    kv = min(max(values.get("kv_cache_usage", 0.0), 0.0), 1.0)
    return EngineFacts(
        requests_running=values.get("requests_running", 0.0),
        requests_waiting=values.get("requests_waiting", 0.0),
        kv_cache_usage=kv,
        generation_tokens_total=values.get("generation_tokens_total", 0.0),
        requests_total=values.get("requests_total", 0.0),
        latency_buckets=tuple(sorted(buckets.items())),
    )


def _le(line: str) -> float | None:
    start = line.find('le="')
    if start < 0:
        return None
    end = line.find('"', start + 4)
    try:
        return float(line[start + 4 : end])  # "+Inf" parses as inf
    except ValueError:
        return None


def rates(before: tuple[float, EngineFacts] | None, after: tuple[float, EngineFacts]) -> Rates:
    """What happened between two ``(monotonic seconds, facts)`` readings. Nothing for
    the first reading or after the engine restarted (a counter went back)."""
    if before is None or after[0] <= before[0]:
        return Rates()
    old, new = before[1], after[1]
    if new.requests_total < old.requests_total or (
        new.generation_tokens_total < old.generation_tokens_total
    ):
        return Rates()
    seconds = after[0] - before[0]
    earlier = dict(old.latency_buckets)
    delta = tuple((b, c - earlier.get(b, 0.0)) for b, c in new.latency_buckets)
    return Rates(
        tokens_per_second=(new.generation_tokens_total - old.generation_tokens_total) / seconds,
        requests_per_second=(new.requests_total - old.requests_total) / seconds,
        latency_p95=quantile(0.95, delta),
    )


def quantile(q: float, buckets: tuple[tuple[float, float], ...]) -> float | None:
    """Prometheus' ``histogram_quantile``: linear inside the bucket holding rank ``q``;
    in the ``+Inf`` bucket, the highest finite bound. None for an empty histogram."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound
