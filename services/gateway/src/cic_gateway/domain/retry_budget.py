"""How many retries the gateway may make: a share of its requests, so that when
replicas fail together retries add a bounded amount of load instead of multiplying it."""

from __future__ import annotations

from collections import deque

__all__ = ["RetryBudget"]


class RetryBudget:
    """Retries allowed over the last ``window`` seconds: ``ratio`` of the requests
    made in it, plus ``floor`` per second so a quiet gateway can still retry (the
    budget Finagle and Envoy use). Time is passed in: a pure policy over counts."""

    def __init__(self, ratio: float = 0.2, floor: float = 5.0, window: float = 10.0) -> None:
        self._ratio = ratio
        self._floor = floor
        self._window = window
        self._seconds: deque[list[float]] = deque()
        """``[second, requests, retries]`` for each second with any."""

    def requested(self, now: float) -> None:
        """One request came in."""
        self._bucket(now)[1] += 1

    def may_retry(self, now: float) -> bool:
        """Whether one more retry fits the budget; counts it when it does."""
        bucket = self._bucket(now)
        requests = sum(b[1] for b in self._seconds)
        retries = sum(b[2] for b in self._seconds)
        if retries + 1 > self._ratio * requests + self._floor * self._window:
            return False
        bucket[2] += 1
        return True

    def _bucket(self, now: float) -> list[float]:
        second = float(int(now))
        while self._seconds and self._seconds[0][0] <= second - self._window:
            self._seconds.popleft()
        if not self._seconds or self._seconds[-1][0] != second:
            self._seconds.append([second, 0.0, 0.0])
        return self._seconds[-1]
