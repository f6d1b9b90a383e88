"""Polling engines ourselves (the pull half of double safety), and the streaks it keeps."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import cast
from urllib.parse import urlsplit

from cic_common.scripts import Script
from redis.asyncio import Redis

from cic_health.adapters.store import ParsedHash, drop_fields, forget_fields

__all__ = ["EnginePoller", "PollRecord", "PollStore"]

_POLLS = "cic:polls"

# Each engine's streak after one more poll: a success ends the failures and counts one
# more success (its round trip in the latency average, weighted 0.2), a failure the
# reverse. ARGV: the time of the polls, then node id, 1 or 0, round trip in ms, ...
_RECORD = """
local written = {}
for i = 2, #ARGV, 3 do
  local node, ok, ms = ARGV[i], ARGV[i + 1] == '1', tonumber(ARGV[i + 2])
  local failures, successes, latency = 0, 0, nil
  local last = redis.call('hget', KEYS[1], node)
  if last then
    local f, s, l = string.match(last, '^(%d+) (%d+) (%S+)')
    if f then
      failures, successes, latency = tonumber(f), tonumber(s), tonumber(l)
    end
  end
  if ok then
    failures, successes = 0, successes + 1
    latency = latency and (0.8 * latency + 0.2 * ms) or ms
  else
    failures, successes = failures + 1, 0
  end
  local value = string.format('%d %d %s %s', failures, successes,
    latency and string.format('%.17g', latency) or '-', ARGV[1])
  redis.call('hset', KEYS[1], node, value)
  written[#written + 1] = value
end
return written
"""


@dataclass(frozen=True)
class PollRecord:
    failures: int
    successes: int
    latency_ms: float | None
    """Exponentially weighted average of the ``/health`` round trip."""
    at: float
    """When the last poll was made (epoch seconds)."""


class EnginePoller:
    """``GET <endpoint>/health`` with a short timeout and bounded concurrency, so a
    thousand hung engines cost a thousand sockets for two seconds, not a stalled pass.

    A poll is one short HTTP/1.1 exchange on a fresh connection (``Connection: close``;
    engines close idle keep-alive connections within seconds anyway, and polls are tens
    of seconds apart), read up to its status line. It is a bare asyncio protocol
    rather than an HTTP client or asyncio streams: at 10,000 engines health makes
    hundreds of polls a second, and that machinery cost several times the CPU of the
    exchange itself.
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
            except (OSError, TimeoutError, ValueError):
                ok = False
            return ok, time.monotonic() - started

    async def close(self) -> None:
        """Nothing is held between polls."""


async def _get_health(endpoint: str) -> bool:
    """True when ``endpoint``'s ``/health`` answers 200. Raises ``ValueError`` for an
    endpoint that is not an http(s) URL, ``OSError`` when it cannot be reached."""
    host, port, secure, request = _target(endpoint)
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bytes] = loop.create_future()
    transport, _ = await loop.create_connection(
        lambda: _StatusLine(request, answer), host, port, ssl=secure or None
    )
    try:
        status = await answer
    finally:
        transport.close()
    parts = status.split(b" ", 2)
    return len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1] == b"200"


@functools.lru_cache(maxsize=65536)
def _target(endpoint: str) -> tuple[str, int, bool, bytes]:
    """Host, port, TLS or not, and the request bytes of ``endpoint``'s health check."""
    url = urlsplit(endpoint)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"not an http(s) endpoint: {endpoint!r}")
    secure = url.scheme == "https"
    request = (
        f"GET {url.path.rstrip('/')}/health HTTP/1.1\r\nHost: {url.netloc}\r\n"
        "Connection: close\r\nUser-Agent: cic-health\r\n\r\n"
    ).encode()
    return url.hostname, url.port or (443 if secure else 80), secure, request


class _StatusLine(asyncio.Protocol):
    """Sends the request once connected; ``answer`` gets the response's status line."""

    def __init__(self, request: bytes, answer: asyncio.Future[bytes]) -> None:
        self._request = request
        self._answer = answer
        self._head = b""
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        cast(asyncio.WriteTransport, transport).write(self._request)

    def data_received(self, data: bytes) -> None:
        self._head += data
        if (b"\r\n" in self._head or len(self._head) >= _STATUS_LINE_MAX) and not (
            self._answer.done()
        ):
            self._answer.set_result(self._head.partition(b"\r\n")[0])
            if self._transport is not None:
                self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._answer.done():  # closed before a whole status line: not an answer
            self._answer.set_result(self._head.partition(b"\r\n")[0])


_STATUS_LINE_MAX = 1024


class PollStore:
    """Poll streaks per node in Redis, so an instance taking over a node's shard
    continues where the last one stopped. A record is ``<failures> <successes>
    <latency ms or -> <at, epoch seconds>``: every pass reads them all."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._records = ParsedHash(_POLLS, _parse)
        self._record = Script(redis, _RECORD)

    async def every(self) -> dict[str, PollRecord]:
        """The streaks of every node polled (one read, however many)."""
        return await self._records.read(self._redis)

    async def record(
        self, results: dict[str, tuple[bool, float]], at: datetime
    ) -> dict[str, PollRecord]:
        """Fold new poll results into the streaks, each read and written in one atomic
        script (polls of one engine from two places never lose one); returns the
        updated records."""
        if not results:
            return {}
        args: list[str | float | int] = [repr(at.timestamp())]
        for node_id, (ok, seconds) in results.items():
            args += [node_id, int(ok), seconds * 1000]
        written = await self._record(keys=[_POLLS], args=args)
        updated = {}
        for node_id, value in zip(results, written, strict=True):
            record = _parse(value)
            if record is not None:
                updated[node_id] = record
        return updated

    async def drop(self, gone: set[str]) -> None:
        await drop_fields(self._redis, _POLLS, gone)

    async def sweep(self, keep: set[str], scope: Callable[[str], bool]) -> None:
        await forget_fields(self._redis, _POLLS, keep, scope)


def _parse(value: bytes) -> PollRecord | None:
    try:
        failures, successes, latency, at = value.split()
        return PollRecord(
            int(failures), int(successes), None if latency == b"-" else float(latency),
            float(at),
        )  # fmt: skip
    except ValueError:  # not a record this version wrote: none
        return None
