"""The pull half of double safety, paced: every engine health watches is polled once
per poll interval, the polls spread evenly over it rather than fired in bursts."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime, timedelta

from cic_common.replicas import ReplicaTable

from cic_health.adapters.poller import EnginePoller, PollRecord, PollStore

__all__ = ["EnginePolls"]

_NEVER = 0.0
_HEADROOM = 1.25
"""Each round polls this much more than its even share, so a backlog drains."""


class EnginePolls:
    """Polls the engines the verdict pass hands it (``watch``) in rounds ``tick``
    apart: each round polls the longest-unpolled engines whose last poll is at least
    ``interval`` old, at most their share of the interval. A round folds the results
    into the streaks kept in Redis (which the pass judges on) and puts each answering
    engine's round-trip average in its replica-table entry."""

    def __init__(
        self,
        poller: EnginePoller,
        polls: PollStore,
        table: ReplicaTable,
        *,
        interval: timedelta,
        tick: timedelta | None = None,
    ) -> None:
        self._poller = poller
        self._polls = polls
        self._table = table
        self._interval = interval.total_seconds()
        self._tick = tick.total_seconds() if tick is not None else None
        """None: every due engine in each round (tests drive the rounds)."""
        self._endpoints: dict[str, str] = {}
        self._polled_at: dict[str, float] = {}
        """Epoch seconds of each watched engine's last poll."""
        self._last_round: float | None = None
        self._hurrying: set[str] = set()

    def watch(self, endpoints: dict[str, str], known: dict[str, PollRecord]) -> None:
        """Poll these engines (node id -> endpoint) from now on; ``known``: their last
        polls as stored, so a restarted or new instance keeps their rhythm."""
        self._endpoints = endpoints
        if self._polled_at.keys() != endpoints.keys():  # nodes came or went
            last, self._polled_at = self._polled_at, {}
            for n in endpoints:
                self._polled_at[n] = max(last.get(n, _NEVER), known[n].at if n in known else _NEVER)

    async def due(self) -> list[datetime]:
        """The loop's fetch: one round, at this instant."""
        return [datetime.now(UTC)]

    async def hurry(
        self, node_id: str, endpoint: str, *, tries: int, spacing: float
    ) -> PollRecord | None:
        """Polls one engine now, out of its rhythm: up to ``tries`` times ``spacing``
        seconds apart, until it answers. The results count in its streak like any
        poll's; returns its record after the last."""
        if node_id in self._hurrying:
            return None  # already being polled for another report
        self._hurrying.add(node_id)
        try:
            return await self._hurry(node_id, endpoint, tries, spacing)
        finally:
            self._hurrying.discard(node_id)

    async def _hurry(
        self, node_id: str, endpoint: str, tries: int, spacing: float
    ) -> PollRecord | None:
        record = None
        for attempt in range(tries):
            if attempt:
                await asyncio.sleep(spacing)
            result = await self._poller.poll(endpoint)
            when = datetime.now(UTC)
            record = (await self._polls.record({node_id: result}, when)).get(node_id)
            if node_id in self._polled_at:
                self._polled_at[node_id] = when.timestamp()
            if result[0]:
                break
        return record

    async def poll(self, when: datetime) -> dict[str, PollRecord]:
        """One round; returns the updated records of the engines it polled."""
        now = when.timestamp()
        due = [n for n, at in self._polled_at.items() if now - at >= self._interval]
        if not due:
            self._last_round = now
            return {}
        if self._tick is not None and self._interval > 0:
            # The share of the time since the last round (slow rounds take more each).
            since = max(self._tick, now - (self._last_round or now))
            share = len(self._endpoints) * (since / self._interval) * _HEADROOM
            due.sort(key=self._polled_at.__getitem__)
            due = due[: max(1, math.ceil(share))]
        self._last_round = now
        results = await asyncio.gather(*(self._poller.poll(self._endpoints[n]) for n in due))
        fresh = await self._polls.record(dict(zip(due, results, strict=True)), when)
        for node_id in fresh:
            if node_id in self._polled_at:  # not dropped by a pass meanwhile
                self._polled_at[node_id] = now
        latencies = [
            (n, json.dumps({"latency_ms": r.latency_ms}))
            for n, r in fresh.items()
            if r.latency_ms is not None
        ]
        if latencies:
            await self._table.merge(latencies)
        return fresh
