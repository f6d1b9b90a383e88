"""The simulator's latency model: pure functions of the request and the load, no clock."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_NUM_SEQS", "LatencyModel", "kv_cache_usage", "load_factor"]

MAX_NUM_SEQS = 64
"""Requests generated at once, as vLLM's ``--max-num-seqs``; the rest wait."""


def load_factor(running: int, max_num_seqs: int, full_load: float) -> float:
    """How much slower each step is with ``running`` requests in the batch.

    One request alone runs at full speed (1.0); the factor grows linearly to
    ``full_load`` when the batch is full (``max_num_seqs``), as in llm-d-inference-sim's
    ``time-factor-under-load``. Beyond a full batch requests wait; they do not slow it more.
    """
    if max_num_seqs <= 1:
        return full_load if running >= 1 else 1.0
    busy = min(max(running, 1), max_num_seqs)
    return 1.0 + (full_load - 1.0) * (busy - 1) / (max_num_seqs - 1)


def kv_cache_usage(running: int, max_num_seqs: int) -> float:
    """The share of the KV cache in use: each running request holds one slot's worth."""
    return min(1.0, max(running, 0) / max_num_seqs)


@dataclass(frozen=True)
class LatencyModel:
    """Seconds an engine takes, from its settings; every figure is zero by default.

    Attributes:
        ttft_overhead: fixed time before the first token (scheduling, the first step).
        prefill_per_token: time to prefill each prompt token.
        inter_token_latency: time between two generated tokens (one decode step).
        max_num_seqs: the batch size beyond which requests wait.
        time_factor_under_load: the slowdown of a full batch (1.0: none).
    """

    ttft_overhead: float = 0.0
    prefill_per_token: float = 0.0
    inter_token_latency: float = 0.0
    max_num_seqs: int = MAX_NUM_SEQS
    time_factor_under_load: float = 1.0

    def __post_init__(self) -> None:
        timings = (self.ttft_overhead, self.prefill_per_token, self.inter_token_latency)
        if min(timings) < 0:
            raise ValueError("latencies must not be negative")
        if self.max_num_seqs < 1:
            raise ValueError("max_num_seqs must be at least 1")
        if self.time_factor_under_load < 1:
            raise ValueError("time_factor_under_load must be at least 1")

    @property
    def is_zero(self) -> bool:
        """True when every request answers at once, whatever the load."""
        return not (self.ttft_overhead or self.prefill_per_token or self.inter_token_latency)

    def factor(self, running: int, slowdown: float = 1.0) -> float:
        """The multiplier of every latency: the load's and the ``slow`` fault's."""
        return load_factor(running, self.max_num_seqs, self.time_factor_under_load) * slowdown

    def time_to_first_token(self, prompt_tokens: int, running: int, slowdown: float = 1.0) -> float:
        """Overhead plus prefill of the prompt, slowed by the load and the fault."""
        base = self.ttft_overhead + prompt_tokens * self.prefill_per_token
        return base * self.factor(running, slowdown)

    def inter_token(self, running: int, slowdown: float = 1.0) -> float:
        """The gap between two tokens of one request."""
        return self.inter_token_latency * self.factor(running, slowdown)

    def decode_time(self, tokens: int, running: int, slowdown: float = 1.0) -> float:
        """Time from the first token to the last of ``tokens`` tokens (one step each)."""
        return max(tokens - 1, 0) * self.inter_token(running, slowdown)

    def request_latency(
        self, prompt_tokens: int, tokens: int, running: int, slowdown: float = 1.0
    ) -> float:
        """End to end, once admitted: the first token, then one step per further token."""
        first = self.time_to_first_token(prompt_tokens, running, slowdown)
        return first + self.decode_time(tokens, running, slowdown)
