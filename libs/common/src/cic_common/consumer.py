"""Durable JetStream consumers that never drop an event silently and never stop."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Generic, TypeVar

from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from cic_common.events import Envelope, Event, PoisonEvent, decode
from cic_common.pull import Puller
from cic_common.streams import dlq_subject, stream_for
from cic_common.telemetry import consuming

if TYPE_CHECKING:
    from cic_common.bus import Bus

__all__ = ["Authenticator", "BatchHandler", "Consumer", "Delivery", "Handler", "nak_delay"]

log = logging.getLogger(__name__)
E = TypeVar("E", bound=Event)
Handler = Callable[[E, Envelope], Awaitable[None]]
BatchHandler = Callable[[list[tuple[E, Envelope]]], Awaitable[None]]
Authenticator = Callable[[str, bytes, dict[str, str], Event], Awaitable[None]]
"""Checks who sent an event (subject, body, headers, decoded event); raises
``PoisonEvent`` to refuse it."""


def nak_delay(delivered: int) -> float:
    """Back-off before redelivery: 1 s, 2 s, 4 s … capped at 30 s, with ±20 % jitter."""
    base: float = min(30.0, 2.0 ** max(0, delivered - 1))
    return base * random.uniform(0.8, 1.2)


@dataclass(frozen=True)
class Delivery:
    """How a consumer takes its events (see ``Bus.consumer``)."""

    max_deliver: int = 5
    concurrency: int = 1
    ack_wait: float = 30.0
    deliver_new: bool = False
    linger: float = 0.0
    superseded: bool = False


class Consumer(Generic[E]):
    """Runs ``handler`` on each event (or ``batch_handler`` on each fetch's events),
    acking on success.

    - A poison message (undecodable, wrong type or version, refused by the
      authenticator, or the handler raised ``PoisonEvent``) goes to ``dlq.<subject>``
      at once, with the reason in headers.
    - Any other error NAKs with back-off; after ``max_deliver`` deliveries the event is
      dead-lettered too. Nothing is dropped silently and the consumer keeps running.
    - ``superseded`` events are neither acked nor redelivered: a failure is logged.
    """

    def __init__(
        self,
        bus: Bus,
        event_type: type[E],
        durable: str,
        delivery: Delivery,
        *,
        handler: Handler[E] | None = None,
        batch_handler: BatchHandler[E] | None = None,
        authenticate: Authenticator | None = None,
    ) -> None:
        if (handler is None) == (batch_handler is None):
            raise ValueError("give a handler or a batch handler")
        self._bus = bus
        self._type = event_type
        self.durable = durable
        self._delivery = delivery
        self._handler = handler
        self._batch_handler = batch_handler
        self._authenticate = authenticate
        self._slots = asyncio.Semaphore(delivery.concurrency)
        self._inflight: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self.handled = 0
        self.dead_lettered = 0

    async def run(self) -> None:
        """Fetch and handle until ``stop``; then wait for the events in hand."""
        d = self._delivery
        subject = f"cic.{self._type.TYPE}.>"
        stream = stream_for(subject)
        config = ConsumerConfig(
            durable_name=self.durable,
            filter_subject=subject,
            ack_policy=AckPolicy.NONE if d.superseded else AckPolicy.EXPLICIT,
            ack_wait=d.ack_wait,
            # One delivery more than we allow, so a crash during the last attempt still
            # leaves a delivery in which the event is dead-lettered rather than lost.
            max_deliver=d.max_deliver + 1,
            max_ack_pending=max(64, d.concurrency * 4),
            deliver_policy=DeliverPolicy.NEW if d.deliver_new else DeliverPolicy.ALL,
        )
        await self._bus.js.add_consumer(stream, config)
        if self._batch_handler is not None:
            puller = Puller(self._bus.nc, stream, self.durable, d.concurrency)
            await puller.start()
            fetch, close = puller.fetch, puller.stop
        else:
            sub = await self._bus.js.pull_subscribe_bind(self.durable, stream=stream)
            fetch = partial(sub.fetch, d.concurrency)
            close = sub.unsubscribe
        try:
            while not self._stopping.is_set():
                try:
                    msgs = await fetch(1.0)
                except TimeoutError:  # nats-py raises its own or asyncio's; both are this
                    continue
                except Exception:
                    if self._stopping.is_set():
                        break
                    log.exception("fetch failed", extra={"consumer": self.durable})
                    await asyncio.sleep(1.0)
                    continue
                if self._batch_handler is not None:
                    if msgs:
                        await self._handle_batch(self._batch_handler, msgs)
                elif self._handler is not None:
                    for msg in msgs:
                        await self._slots.acquire()
                        task = asyncio.create_task(self._handle(self._handler, msg))
                        self._inflight.add(task)
                        task.add_done_callback(self._inflight.discard)
                if d.linger and len(msgs) < d.concurrency:
                    await asyncio.sleep(d.linger)
        finally:
            if self._inflight:
                await asyncio.gather(*self._inflight, return_exceptions=True)
            await close()

    def stop(self) -> None:
        self._stopping.set()

    async def _handle(self, handler: Handler[E], msg: Msg) -> None:
        try:
            await self._handle_one(handler, msg)
        finally:
            self._slots.release()

    async def _handle_one(self, handler: Handler[E], msg: Msg) -> None:
        try:
            envelope, event = decode(msg.data, self._type)
        except PoisonEvent as exc:
            await self._dead_letter(msg, str(exc))
            return
        with consuming(f"consume {self._type.TYPE}", msg.headers, envelope.event_id) as span:
            try:
                await self._check_sender(msg, event)
                await handler(event, envelope)
            except PoisonEvent as exc:
                await self._dead_letter(msg, str(exc))
                return
            except Exception as exc:
                if span is not None:
                    span.record_exception(exc)
                await self._failed(msg, exc)
                return
        await self._settle(msg)

    async def _handle_batch(self, handler: BatchHandler[E], msgs: list[Msg]) -> None:
        """Decode and check each event, then hand the good ones over in one call: it
        succeeds or fails as a whole. No span per event (batches carry frequent,
        untraced events such as heartbeats)."""
        admitted: list[tuple[Msg, tuple[E, Envelope]]] = []
        for msg in msgs:
            try:
                envelope, event = decode(msg.data, self._type)
                await self._check_sender(msg, event)
            except PoisonEvent as exc:
                await self._dead_letter(msg, str(exc))
                continue
            except Exception as exc:  # the check itself failed (its store is down)
                await self._failed(msg, exc)
                continue
            admitted.append((msg, (event, envelope)))
        if not admitted:
            return
        try:
            await handler([item for _, item in admitted])
        except Exception as exc:
            if len(admitted) == 1 or self._delivery.superseded:
                for msg, _ in admitted:  # superseded: the next batch says it all again
                    await self._failed(msg, exc)
                return
            # one bad event must not take its batch with it: each alone, then
            for msg, item in admitted:
                await self._handle_batch_of_one(handler, msg, item)
            return
        for msg, _ in admitted:
            await self._settle(msg)

    async def _handle_batch_of_one(
        self, handler: BatchHandler[E], msg: Msg, item: tuple[E, Envelope]
    ) -> None:
        try:
            await handler([item])
        except Exception as exc:
            await self._failed(msg, exc)
            return
        await self._settle(msg)

    async def _check_sender(self, msg: Msg, event: E) -> None:
        if self._authenticate is not None:
            await self._authenticate(msg.subject, msg.data, msg.headers or {}, event)

    async def _settle(self, msg: Msg) -> None:
        if not self._delivery.superseded:
            await msg.ack()
        self.handled += 1

    async def _failed(self, msg: Msg, exc: Exception) -> None:
        """Retry later (NAK with back-off), or dead-letter on the last delivery; a
        superseded event is dropped, the next one will say the same and more."""
        if self._delivery.superseded:
            log.warning("handler failed; the next event supersedes this one",
                        exc_info=exc, extra={"consumer": self.durable})  # fmt: skip
            return
        delivered = msg.metadata.num_delivered
        if delivered >= self._delivery.max_deliver:
            await self._dead_letter(msg, f"{type(exc).__name__}: {exc}")
        else:
            log.warning("handler failed; will retry", exc_info=exc,
                        extra={"consumer": self.durable, "delivered": delivered})  # fmt: skip
            await msg.nak(delay=nak_delay(delivered))

    async def _dead_letter(self, msg: Msg, reason: str) -> None:
        headers = dict(msg.headers or {})
        headers.update(
            {
                "Nats-Msg-Id": f"dlq:{self.durable}:{msg.metadata.sequence.stream}",
                "Cic-Dlq-Reason": reason.replace("\r", " ").replace("\n", " ")[:1000],
                "Cic-Dlq-Consumer": self.durable,
                "Cic-Dlq-Deliveries": str(msg.metadata.num_delivered),
                "Cic-Original-Subject": msg.subject,
            }
        )
        await self._bus.js.publish(dlq_subject(msg.subject), msg.data, headers=headers, timeout=5)
        if not self._delivery.superseded:
            await msg.term()
        self.dead_lettered += 1
        log.error(
            "event dead-lettered",
            extra={"consumer": self.durable, "subject": msg.subject, "reason": reason},
        )
