"""Time to first token through a target, against the direct path measured alongside.

A stream's first token is the first SSE ``data:`` line that carries text: a chat
stream's first line only names the role, and engines (this simulator, for one) may send
it before any token is generated, which would time the proxy's path but not the
engine's work. Each of a few
workers sends requests one at a time, alternating between the target and an engine
directly (which of the two goes first alternates too), so both series see the same
moments of a noisy machine; the overhead is the difference of their percentiles. Each
stream is read to its end, as a client would: a proxy's cost after the first token is
still a cost to the next request.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

__all__ = ["Ttft", "measure_ttft", "percentile"]


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank; NaN for none."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = math.ceil(q * len(ordered) - 1e-9)  # the float product may overshoot by an ulp
    return ordered[min(len(ordered), max(1, rank)) - 1]


@dataclass(frozen=True)
class Ttft:
    """Times to first token in milliseconds, through the target and direct."""

    target: list[float]
    direct: list[float]
    failed: int

    def added(self, q: float) -> float:
        return percentile(self.target, q) - percentile(self.direct, q)


def _has_text(line: str) -> bool:
    """Whether an SSE line is a chunk carrying generated text (chat or completion)."""
    if not line.startswith("data:") or line.endswith("[DONE]"):
        return False
    choices = json.loads(line[5:]).get("choices") or [{}]
    return bool(choices[0].get("delta", {}).get("content") or choices[0].get("text"))


async def _first_token_ms(
    client: httpx.AsyncClient, url: str, body: bytes, headers: Mapping[str, str]
) -> float | None:
    """Milliseconds to the first token (None for a failure); reads the rest."""
    started = time.perf_counter()
    first: float | None = None
    async with client.stream("POST", url, content=body, headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
            return None
        async for line in response.aiter_lines():
            if first is None and _has_text(line):
                first = (time.perf_counter() - started) * 1000
    return first


async def _measure(
    url: str, direct_url: str, body: bytes, headers: Mapping[str, str], requests: int,
    workers: int,
) -> Ttft:  # fmt: skip
    series: dict[bool, list[float]] = {True: [], False: []}  # through the target?
    failed = 0
    plain = {"Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=2 * workers, max_keepalive_connections=2 * workers)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def one(through_target: bool) -> None:
            nonlocal failed
            if through_target:
                ms = await _first_token_ms(client, url, body, {**plain, **headers})
            else:
                ms = await _first_token_ms(client, direct_url, body, plain)
            if ms is None:
                failed += 1
            else:
                series[through_target].append(ms)

        async def worker(n: int) -> None:
            for i in range(n, requests, workers):
                await one(i % 2 == 0)
                await one(i % 2 == 1)

        for _ in range(workers):  # warm-up: connections opened, caches filled
            await one(True)
            await one(False)
        series[True].clear()
        series[False].clear()
        await asyncio.gather(*(worker(n) for n in range(workers)))
    return Ttft(series[True], series[False], failed)


def measure_ttft(
    url: str,
    direct_url: str,
    body: str,
    headers: Mapping[str, str],
    *,
    requests: int = 300,
    workers: int = 4,
) -> Ttft:
    """``requests`` streams through ``url`` and as many to ``direct_url``, interleaved."""
    return asyncio.run(_measure(url, direct_url, body.encode(), headers, requests, workers))
