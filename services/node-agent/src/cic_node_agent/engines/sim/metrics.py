"""The simulator's ``/metrics``: vLLM's names, labels, histogram buckets and text format."""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Sequence

from cic_node_agent.engines.sim.latency import kv_cache_usage

__all__ = [
    "FINISH_REASONS",
    "INTER_TOKEN_LATENCY_BUCKETS",
    "REQUEST_LATENCY_BUCKETS",
    "TIME_TO_FIRST_TOKEN_BUCKETS",
    "Histogram",
    "Load",
    "token_buckets",
]

# vLLM's default boundaries (vllm/v1/metrics/buckets.py).
REQUEST_LATENCY_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
    120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
TIME_TO_FIRST_TOKEN_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
INTER_TOKEN_LATENCY_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")


def token_buckets(max_model_len: int) -> tuple[float, ...]:
    """vLLM's token-count boundaries: 1, 2, 5, 10, 20, 50... up to ``max_model_len``."""
    bounds: list[float] = []
    scale = 1
    while True:
        for mantissa in (1, 2, 5):
            if mantissa * scale > max_model_len:
                return tuple(bounds)
            bounds.append(float(mantissa * scale))
        scale *= 10


def _number(value: float) -> str:
    """A sample value as Prometheus' Python client writes it."""
    if value == float("inf"):
        return "+Inf"
    return repr(float(value))


class Histogram:
    """A Prometheus histogram: a count per bucket (upper bounds inclusive), a sum, a count."""

    __slots__ = ("bounds", "count", "counts", "name", "text", "total")

    def __init__(self, name: str, text: str, bounds: Sequence[float]) -> None:
        self.name = name
        self.text = text
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self.total = 0.0
        self.count = 0

    def observe(self, value: float, times: int = 1) -> None:
        """Records ``value`` ``times`` times."""
        self.counts[bisect_left(self.bounds, value)] += times
        self.total += value * times
        self.count += times

    def lines(self, labels: str) -> list[str]:
        """``_bucket`` rows (cumulative, ``+Inf`` last), then ``_count`` and ``_sum``."""
        head = labels.split(",", 1)  # engine first, then le, then model_name: sorted
        rows = [f"# HELP {self.name} {self.text}", f"# TYPE {self.name} histogram"]
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            le = f'{head[0]},le="{_number(bound)}",{head[1]}'
            rows.append(f"{self.name}_bucket{{{le}}} {_number(running)}")
        rows.append(f"{self.name}_count{{{labels}}} {_number(self.count)}")
        rows.append(f"{self.name}_sum{{{labels}}} {_number(self.total)}")
        return rows


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Load:
    """Requests in flight, the counters since start and the histograms ``/metrics`` reports."""

    def __init__(self, model: str, max_num_seqs: int, max_model_len: int) -> None:
        self.labels = f'engine="0",model_name="{_label(model)}"'
        self.max_num_seqs = max_num_seqs
        self.slots = asyncio.Semaphore(max_num_seqs)
        self.waiting = 0
        self.running = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.finished = dict.fromkeys(FINISH_REASONS, 0)
        tokens = token_buckets(max_model_len)
        self.ttft = Histogram("vllm:time_to_first_token_seconds",
                              "Histogram of time to first token in seconds.",
                              TIME_TO_FIRST_TOKEN_BUCKETS)  # fmt: skip
        self.itl = Histogram("vllm:inter_token_latency_seconds",
                             "Histogram of inter-token latency in seconds.",
                             INTER_TOKEN_LATENCY_BUCKETS)  # fmt: skip
        self.e2e = Histogram("vllm:e2e_request_latency_seconds",
                             "Histogram of e2e request latency in seconds.",
                             REQUEST_LATENCY_BUCKETS)  # fmt: skip
        self.queue = Histogram("vllm:request_queue_time_seconds",
                               "Histogram of time spent in WAITING phase for request.",
                               REQUEST_LATENCY_BUCKETS)  # fmt: skip
        self.prompt = Histogram("vllm:request_prompt_tokens",
                                "Number of prefill tokens processed.", tokens)  # fmt: skip
        self.generation = Histogram("vllm:request_generation_tokens",
                                    "Number of generation tokens processed.", tokens)  # fmt: skip

    async def enter(self, prompt: int, arrival: float) -> None:
        """Waits for a slot in the batch, then counts the request as running."""
        self.waiting += 1
        try:
            await self.slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        self.prompt_tokens += prompt
        self.queue.observe(time.perf_counter() - arrival)

    def leave(self, aborted: bool = False) -> None:
        """The request is out of the batch, however it ended; the next waiting one comes in."""
        self.running -= 1
        self.slots.release()
        if aborted:
            self.finished["abort"] += 1

    def finish(
        self, reason: str, *, arrival: float, first: float, prompt: int, generated: int
    ) -> None:
        """Records a request that ran to its end: ``first`` is when its first token came."""
        end = time.perf_counter()
        self.finished[reason] += 1
        self.ttft.observe(first - arrival)
        self.e2e.observe(end - arrival)
        self.prompt.observe(prompt)
        self.generation.observe(generated)

    def exposition(self) -> str:
        """The Prometheus text format (0.0.4), as vLLM's ``/metrics`` writes it."""
        labels = self.labels
        rows = [
            ("vllm:num_requests_running", "gauge",
             "Number of requests in model execution batches.", self.running),
            ("vllm:num_requests_waiting", "gauge",
             "Number of requests waiting to be processed.", self.waiting),
            ("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.",
             kv_cache_usage(self.running, self.max_num_seqs)),
            ("vllm:prompt_tokens_total", "counter",
             "Number of prefill tokens processed.", self.prompt_tokens),
            ("vllm:generation_tokens_total", "counter",
             "Number of generation tokens processed.", self.generation_tokens),
        ]  # fmt: skip
        lines: list[str] = []
        for name, kind, text, value in rows:
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            lines.append(f"{name}{{{labels}}} {_number(value)}")
        name = "vllm:request_success_total"
        lines += [f"# HELP {name} Count of successfully processed requests.",
                  f"# TYPE {name} counter"]  # fmt: skip
        engine, model = labels.split(",", 1)
        for reason, count in self.finished.items():
            lines.append(f'{name}{{{engine},finished_reason="{reason}",{model}}} {_number(count)}')
        for histogram in (self.ttft, self.itl, self.e2e, self.queue, self.prompt, self.generation):
            lines += histogram.lines(labels)
        return "\n".join(lines) + "\n"
