"""Pulling from a durable JetStream consumer into a callback, for frequent events.

nats-py's ``fetch`` waits for each message of a batch in turn (a timer and a task per
message). Here the server's answers to a pull request land in a subscription callback
that only appends them to a buffer; a fetch takes whatever has arrived, waiting once
for the first. A steady stream costs one wake-up per batch rather than per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["PullRefused", "Puller"]

_ENDED = {"404", "408"}
"""Status codes that end a pull request: no messages, or it expired."""
_REFUSED = "409"
"""The server refused or cut short the request (the consumer was deleted, too many
waiting requests, a leadership change): the fetch fails, and its caller backs off."""


class Puller:
    """Keeps one pull request of up to ``batch`` messages open on ``durable`` and
    hands over what it delivers. A request lasts ``expires`` seconds on the server; one
    that went unanswered (lost in a reconnect) is replaced after that."""

    def __init__(
        self, nc: Client, stream: str, durable: str, batch: int, expires: float = 5.0
    ) -> None:
        self._nc = nc
        self._subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = nc.new_inbox()
        self._request = json.dumps({"batch": batch, "expires": int(expires * 1e9)}).encode()
        self._batch = batch
        self._expires = expires
        self._buffer: list[Msg] = []
        self._arrived = asyncio.Event()
        self._open = 0
        """Messages the open request may still deliver (0: none open)."""
        self._sent = 0.0
        self._refused: str | None = None
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._inbox, cb=self._arrive)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def fetch(self, wait: float) -> list[Msg]:
        """The messages delivered since the last fetch; waits up to ``wait`` seconds for
        one when none has (an empty list then). Raises ``PullRefused``."""
        if self._open <= 0 or time.monotonic() - self._sent > self._expires + 1.0:
            self._open, self._sent = self._batch, time.monotonic()
            await self._nc.publish(self._subject, self._request, reply=self._inbox)
        if not self._buffer:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._arrived.wait()
        self._arrived.clear()
        msgs, self._buffer = self._buffer, []
        if not msgs and self._refused is not None:
            reason, self._refused = self._refused, None
            raise PullRefused(reason)
        return msgs

    async def _arrive(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers and not msg.data else None
        if status is None:
            self._buffer.append(msg)
            self._open -= 1
        elif status in _ENDED:
            self._open = 0
        elif status == _REFUSED:
            self._open = 0
            self._refused = msg.headers.get("Description", "refused") if msg.headers else ""
        self._arrived.set()


class PullRefused(Exception):
    """The server refused a pull request (its description is the message)."""
