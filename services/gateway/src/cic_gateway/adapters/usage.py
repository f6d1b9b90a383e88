"""Metering: what each answered request used, published as an event and stored once."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

import asyncpg
from cic_common.bus import Publisher
from cic_common.events import Envelope, UsageRecorded

__all__ = ["UsageMeter", "UsageStore"]

log = logging.getLogger(__name__)


class UsageStore:
    """The ``usage`` table: one row per request, written by the usage consumer."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def on_usage_recorded(self, event: UsageRecorded, envelope: Envelope) -> None:
        """Store it; a redelivered or republished one changes nothing."""
        await self._pool.execute(
            "INSERT INTO usage (request_id, key_id, model, prompt_tokens, completion_tokens,"
            " created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (request_id) DO NOTHING",
            event.request_id, event.key_id, event.model, event.prompt_tokens,
            event.completion_tokens, envelope.occurred_at,
        )  # fmt: skip

    async def summary(self, key_id: str | None, since: datetime | None) -> list[dict[str, Any]]:
        """Requests and tokens per key and model, optionally of one key, since a time."""
        rows = await self._pool.fetch(
            "SELECT key_id, model, count(*) AS requests, sum(prompt_tokens) AS prompt_tokens,"
            " sum(completion_tokens) AS completion_tokens FROM usage"
            " WHERE ($1::text IS NULL OR key_id = $1)"
            " AND ($2::timestamptz IS NULL OR created_at >= $2)"
            " GROUP BY key_id, model ORDER BY key_id, model",
            key_id, since,
        )  # fmt: skip
        return [dict(r) for r in rows]


class UsageMeter:
    """Publishes each answered request's usage without holding up its answer: the
    publish runs in the background (and waits out a NATS reconnect)."""

    def __init__(self, bus: Publisher) -> None:
        self._bus = bus
        self._sending: set[asyncio.Task[None]] = set()

    def record(self, event: UsageRecorded) -> None:
        task = asyncio.create_task(self._send(event))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def drain(self) -> None:
        """Wait for the publishes in flight (at shutdown)."""
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)

    async def _send(self, event: UsageRecorded) -> None:
        try:
            await self._bus.publish(event, msg_id=f"usage:{event.request_id}")
        except Exception:
            log.exception("usage not recorded", extra={"request_id": event.request_id})
