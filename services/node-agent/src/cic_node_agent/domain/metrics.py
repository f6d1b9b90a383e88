"""Reading the engine's Prometheus ``/metrics`` into the facts a heartbeat carries."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EngineFacts", "parse_metrics", "tokens_per_second"]

_GAUGES = {
    "vllm:num_requests_running": "requests_running",
    "vllm:num_requests_waiting": "requests_waiting",
    "vllm:kv_cache_usage_perc": "kv_cache_usage",
    "vllm:gpu_cache_usage_perc": "kv_cache_usage",  # the name before vLLM 0.10
    "vllm:generation_tokens_total": "generation_tokens_total",
}


@dataclass(frozen=True)
class EngineFacts:
    requests_running: float = 0.0
    requests_waiting: float = 0.0
    kv_cache_usage: float = 0.0
    generation_tokens_total: float = 0.0
    """A counter: tokens per second is its rate between two readings."""


def tokens_per_second(before: tuple[float, float] | None, after: tuple[float, float]) -> float:
    """Rate of the generation counter between two ``(seconds, total)`` readings; 0 for
    the first reading or after the engine restarted (the counter went back)."""
    if before is None or after[0] <= before[0] or after[1] < before[1]:
        return 0.0
    return (after[1] - before[1]) / (after[0] - before[0])


def parse_metrics(text: str) -> EngineFacts:
    """Sum each count over its label sets (KV-cache usage: the highest); lines we do
    not know are ignored.

    Malformed lines are skipped rather than failing the heartbeat: a partial reading
    is still a reading.
    """
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        field = _GAUGES.get(name)
        if field is None:
            continue
        try:
            value = float(line.rsplit(" ", 1)[-1])
        except ValueError:
            continue
        if field == "kv_cache_usage":  # a fraction per engine: the fullest one counts
            values[field] = max(values.get(field, 0.0), value)
        else:
            values[field] = values.get(field, 0.0) + value
    kv = min(max(values.get("kv_cache_usage", 0.0), 0.0), 1.0)
    return EngineFacts(
        requests_running=values.get("requests_running", 0.0),
        requests_waiting=values.get("requests_waiting", 0.0),
        kv_cache_usage=kv,
        generation_tokens_total=values.get("generation_tokens_total", 0.0),
    )
