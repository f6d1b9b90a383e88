"""Polling engines ourselves (the pull half of double safety), and the streaks it keeps."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import urlsplit

from redis.asyncio import Redis

from cic_health.adapters.store import drop_fields, forget_fields

__all__ = ["EnginePoller", "PollRecord", "PollStore"]

_POLLS = "cic:polls"


@dataclass(frozen=True)
class PollRecord:
    failures: int
    successes: int
    latency_ms: float | None
    """Exponentially weighted average of the ``/health`` round trip."""
    at: datetime


class EnginePoller:
    """``GET <endpoint>/health`` with a short timeout and bounded concurrency, so a
    thousand hung engines cost a thousand sockets for two seconds, not a stalled pass.

    A poll is one short HTTP/1.1 exchange on a fresh connection (``Connection: close``;
    engines close idle keep-alive connections within seconds anyway, and polls are tens
    of seconds apart). It is written on the bare asyncio stream rather than through a
    general HTTP client: at 10,000 engines health makes hundreds of polls a second, and
    a full client's machinery cost ten times the CPU of the exchange itself.
    """

    def __init__(self, timeout: float = 2.0, concurrency: int = 64) -> None:
        self._timeout = timeout
        self._slots = asyncio.Semaphore(concurrency)

    async def poll(self, endpoint: str) -> tuple[bool, float]:
        """Whether the engine answered 200, and how long it took (seconds)."""
        async with self._slots:
            started = time.monotonic()
            try:
                async with asyncio.timeout(self._timeout):
                    ok = await _get_health(endpoint)
            except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
                ok = False
            return ok, time.monotonic() - started

    async def close(self) -> None:
        """Nothing is held between polls."""


async def _get_health(endpoint: str) -> bool:
    """True when ``endpoint``'s ``/health`` answers 200. Raises ``ValueError`` for an
    endpoint that is not an http(s) URL, ``OSError`` when it cannot be reached."""
    url = urlsplit(endpoint)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"not an http(s) endpoint: {endpoint!r}")
    secure = url.scheme == "https"
    port = url.port or (443 if secure else 80)
    reader, writer = await asyncio.open_connection(url.hostname, port, ssl=secure or None)
    try:
        path = f"{url.path.rstrip('/')}/health"
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {url.netloc}\r\nConnection: close\r\n"
            "User-Agent: cic-health\r\n\r\n".encode()
        )
        status = await reader.readline()
        parts = status.split(b" ", 2)
        return len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1] == b"200"
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


class PollStore:
    """Poll streaks per node in Redis, so a health instance taking over the lease
    continues where the last one stopped."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def latest(self, node_ids: list[str]) -> dict[str, PollRecord]:
        if not node_ids:
            return {}
        raw = await self._redis.hmget(_POLLS, node_ids)
        found = {}
        for node_id, value in zip(node_ids, raw, strict=True):
            if value is not None:
                data = json.loads(value)
                found[node_id] = PollRecord(
                    data["failures"], data["successes"], data["latency_ms"],
                    datetime.fromtimestamp(data["at"], UTC),
                )  # fmt: skip
        return found

    async def record(
        self, results: dict[str, tuple[bool, float]], before: dict[str, PollRecord], at: datetime
    ) -> dict[str, PollRecord]:
        """Fold new poll results into the streaks; returns the updated records."""
        updated = {}
        for node_id, (ok, seconds) in results.items():
            last = before.get(node_id)
            failures = 0 if ok else (last.failures if last else 0) + 1
            successes = (last.successes if last else 0) + 1 if ok else 0
            latency = last.latency_ms if last else None
            if ok:
                sample = seconds * 1000
                latency = sample if latency is None else 0.8 * latency + 0.2 * sample
            updated[node_id] = PollRecord(failures, successes, latency, at)
        if updated:
            mapping = {
                n: json.dumps({"failures": r.failures, "successes": r.successes,
                               "latency_ms": r.latency_ms, "at": r.at.timestamp()})
                for n, r in updated.items()
            }  # fmt: skip
            await self._redis.hset(_POLLS, mapping=cast(Any, mapping))
        return updated

    async def drop(self, gone: set[str]) -> None:
        await drop_fields(self._redis, _POLLS, gone)

    async def sweep(self, keep: set[str]) -> None:
        await forget_fields(self._redis, _POLLS, keep)
