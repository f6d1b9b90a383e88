"""Metering: what each answered request used, published as an event and stored once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from datetime import datetime
from typing import Any

import asyncpg
from cic_common.bus import Publisher
from cic_common.events import Envelope, RequestUsage, UsageRecorded

__all__ = ["UsageMeter", "UsageStore"]

log = logging.getLogger(__name__)


class UsageStore:
    """The ``usage`` table: one row per request, written by the usage consumer."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def on_usage_recorded(self, batch: list[tuple[UsageRecorded, Envelope]]) -> None:
        """Store the requests of a batch of events in one statement; a request stored
        already (a redelivered or republished event) changes nothing."""
        rows = [(usage, envelope.occurred_at) for e, envelope in batch for usage in e.requests]
        await self._pool.execute(
            "INSERT INTO usage (request_id, key_id, model, prompt_tokens, completion_tokens,"
            " created_at) SELECT * FROM unnest($1::text[], $2::text[], $3::text[],"
            " $4::int[], $5::int[], $6::timestamptz[]) ON CONFLICT (request_id) DO NOTHING",
            [u.request_id for u, _ in rows], [u.key_id for u, _ in rows],
            [u.model for u, _ in rows], [u.prompt_tokens for u, _ in rows],
            [u.completion_tokens for u, _ in rows], [at for _, at in rows],
        )  # fmt: skip

    async def summary(
        self, key_id: str | None, since: datetime | None, tenant: str | None = None
    ) -> list[dict[str, Any]]:
        """Requests and tokens per key and model, optionally of one key, since a time, of
        the keys of one tenant."""
        rows = await self._pool.fetch(
            "SELECT key_id, model, count(*) AS requests, sum(prompt_tokens) AS prompt_tokens,"
            " sum(completion_tokens) AS completion_tokens FROM usage"
            " WHERE ($1::text IS NULL OR key_id = $1)"
            " AND ($2::timestamptz IS NULL OR created_at >= $2)"
            " AND ($3::text IS NULL OR key_id IN (SELECT id FROM api_keys WHERE tenant = $3))"
            " GROUP BY key_id, model ORDER BY key_id, model",
            key_id, since, tenant,
        )  # fmt: skip
        return [dict(r) for r in rows]


_MOST_PENDING = 200_000
"""Requests' usage held while NATS is unreachable (about 40 MB)."""


class UsageMeter:
    """Gathers the usage of answered requests and publishes it in batches, every
    ``linger`` seconds or each ``batch`` requests, off the requests' path: one event
    for many requests instead of one each (the per-request publish and its consumption
    were a sixth of the gateway's CPU). A batch that fails to publish is sent again,
    under the same message id, until it goes (or the gateway stops)."""

    def __init__(
        self, bus: Publisher, gateway: str, *, linger: float = 0.1, batch: int = 500
    ) -> None:
        self._bus = bus
        self._gateway = re.sub(r"[^A-Za-z0-9_-]", "-", gateway)[:128]
        self._linger = linger
        self._batch = batch
        self._pending: list[RequestUsage] = []
        self._due = asyncio.Event()
        self._closing = False
        self._sent = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def record(self, usage: RequestUsage) -> None:
        if len(self._pending) >= _MOST_PENDING:  # NATS away for long: keep the newest
            log.error("usage dropped: too much unpublished", extra={"pending": _MOST_PENDING})
            del self._pending[: self._batch]
        self._pending.append(usage)
        if len(self._pending) >= self._batch:
            self._due.set()

    async def drain(self) -> None:
        """Publish what is pending and stop (at shutdown)."""
        self._closing = True
        self._due.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._linger):
                    await self._due.wait()
            self._due.clear()
            while self._pending:
                taken, self._pending = self._pending[: self._batch], self._pending[self._batch :]
                await self._send(taken)
            if self._closing:
                return

    async def _send(self, requests: list[RequestUsage]) -> None:
        self._sent += 1
        try:
            event = UsageRecorded(gateway=self._gateway, requests=requests)
        except ValueError:
            log.exception("usage not publishable", extra={"requests": len(requests)})
            return
        msg_id = f"usage:{self._gateway}:{self._sent}:{requests[0].request_id}"
        for attempt in range(1, 1_000_000):
            try:
                await self._bus.publish(event, msg_id=msg_id)
                return
            except Exception:
                log.exception("usage not published yet; trying again",
                              extra={"requests": len(requests), "attempt": attempt})  # fmt: skip
                if self._closing and attempt >= 3:
                    log.error("usage lost at shutdown", extra={"requests": len(requests)})
                    return
                await asyncio.sleep(min(5.0, 0.2 * attempt))
