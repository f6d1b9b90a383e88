"""The event bus: publishing with de-duplication, and consumers that never drop an event."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from cic_common.events import Envelope, Event, PoisonEvent, decode, encode
from cic_common.signing import SIGNATURE_HEADER, signature_header
from cic_common.streams import dlq_subject, ensure_streams, stream_for
from cic_common.telemetry import consuming, inject_headers

__all__ = ["Bus", "Consumer", "Handler", "Publisher", "nak_delay"]

log = logging.getLogger(__name__)
E = TypeVar("E", bound=Event)
Handler = Callable[[E, Envelope], Awaitable[None]]
Authenticator = Callable[[str, bytes, dict[str, str], Event], Awaitable[None]]
"""Checks who sent an event (subject, body, headers, decoded event); raises
``PoisonEvent`` to refuse it."""


class Publisher(Protocol):
    """What handlers need of the bus; tests pass an in-memory one."""

    async def publish(self, event: Event, *, msg_id: str | None = None) -> str: ...


def nak_delay(delivered: int) -> float:
    """Back-off before redelivery: 1 s, 2 s, 4 s … capped at 30 s, with ±20 % jitter."""
    base: float = min(30.0, 2.0 ** max(0, delivered - 1))
    return base * random.uniform(0.8, 1.2)


class Bus:
    """One NATS connection with JetStream, owned by one service instance."""

    def __init__(
        self,
        nc: Client,
        producer: str,
        signing_secret: str | None = None,
        signing_key_id: str = "node",
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.producer = producer
        self._secret = signing_secret
        self._key_id = signing_key_id

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        producer: str,
        declare: bool = True,
        signing_secret: str | None = None,
        signing_key_id: str = "node",
    ) -> Bus:
        """Connect and, with ``declare``, make sure the streams exist (control-plane
        services declare; node agents only publish, signing with ``signing_secret``;
        a trusted tool signs as ``tool/<name>``)."""
        nc = await nats.connect(
            url,
            name=producer,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=2,
        )
        bus = cls(nc, producer, signing_secret, signing_key_id)
        if declare:
            await ensure_streams(bus.js)
        return bus

    async def publish(self, event: Event, *, msg_id: str | None = None) -> str:
        """Publish ``event`` and wait for JetStream's ack; returns the event id.

        ``msg_id`` becomes ``Nats-Msg-Id``: a repeat inside the stream's duplicate window is
        dropped by the server. Pass a stable id (``launch:<node>``) for commands that must
        take effect once; by default each call is a new event.
        """
        event_id, payload = encode(event, producer=self.producer)
        headers = inject_headers({"Nats-Msg-Id": msg_id or event_id, "Cic-Event-Type": event.TYPE})
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = signature_header(
                self._secret, event.subject(), payload, self._key_id
            )
        await self.js.publish(event.subject(), payload, headers=headers, timeout=5)
        return event_id

    def consumer(
        self,
        event_type: type[E],
        durable: str,
        handler: Handler[E],
        *,
        max_deliver: int = 5,
        concurrency: int = 1,
        ack_wait: float = 30.0,
        deliver_new: bool = False,
        authenticate: Authenticator | None = None,
        linger: float = 0.0,
    ) -> Consumer[E]:
        """A durable pull consumer of every ``event_type`` event; instances sharing
        ``durable`` share the work (each event goes to one of them). With
        ``authenticate``, an event it refuses is dead-lettered unhandled. ``linger``
        (seconds): after a fetch that did not fill every free slot, wait this long
        before the next, so a steady stream is taken in batches rather than one pull
        request per event or two (worth it for frequent events such as heartbeats)."""
        return Consumer(
            self, event_type, durable, handler, max_deliver, concurrency, ack_wait, deliver_new,
            authenticate, linger,
        )  # fmt: skip

    async def close(self) -> None:
        if not self.nc.is_closed:
            await self.nc.drain()


class Consumer(Generic[E]):
    """Runs ``handler`` on each event, acking on success.

    - A poison message (undecodable, wrong type or version, or the handler raised
      ``PoisonEvent``) goes to ``dlq.<subject>`` at once, with the reason in headers.
    - Any other error NAKs with back-off; after ``max_deliver`` deliveries the event is
      dead-lettered too. Nothing is dropped silently and the consumer keeps running.
    """

    def __init__(
        self,
        bus: Bus,
        event_type: type[E],
        durable: str,
        handler: Handler[E],
        max_deliver: int,
        concurrency: int,
        ack_wait: float,
        deliver_new: bool,
        authenticate: Authenticator | None = None,
        linger: float = 0.0,
    ) -> None:
        self._bus = bus
        self._linger = linger
        self._authenticate = authenticate
        self._type = event_type
        self.durable = durable
        self._handler = handler
        self._max_deliver = max_deliver
        self._slots = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        self._ack_wait = ack_wait
        self._deliver_new = deliver_new
        self._inflight: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self.handled = 0
        self.dead_lettered = 0

    async def run(self) -> None:
        """Fetch and handle until ``stop``; then wait for the events in hand."""
        subject = f"cic.{self._type.TYPE}.>"
        stream = stream_for(subject)
        config = ConsumerConfig(
            durable_name=self.durable,
            filter_subject=subject,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._ack_wait,
            # One delivery more than we allow, so a crash during the last attempt still
            # leaves a delivery in which the event is dead-lettered rather than lost.
            max_deliver=self._max_deliver + 1,
            max_ack_pending=max(64, self._concurrency * 4),
            deliver_policy=DeliverPolicy.NEW if self._deliver_new else DeliverPolicy.ALL,
        )
        await self._bus.js.add_consumer(stream, config)
        sub = await self._bus.js.pull_subscribe_bind(self.durable, stream=stream)
        try:
            while not self._stopping.is_set():
                try:
                    msgs = await sub.fetch(self._concurrency, timeout=1.0)
                except TimeoutError:  # nats-py raises its own or asyncio's; both are this
                    continue
                except Exception:
                    if self._stopping.is_set():
                        break
                    log.exception("fetch failed", extra={"consumer": self.durable})
                    await asyncio.sleep(1.0)
                    continue
                for msg in msgs:
                    await self._slots.acquire()
                    task = asyncio.create_task(self._handle(msg))
                    self._inflight.add(task)
                    task.add_done_callback(self._inflight.discard)
                if self._linger and len(msgs) < self._concurrency:
                    await asyncio.sleep(self._linger)
        finally:
            if self._inflight:
                await asyncio.gather(*self._inflight, return_exceptions=True)
            await sub.unsubscribe()

    def stop(self) -> None:
        self._stopping.set()

    async def _handle(self, msg: Msg) -> None:
        try:
            await self._handle_one(msg)
        finally:
            self._slots.release()

    async def _handle_one(self, msg: Msg) -> None:
        delivered = msg.metadata.num_delivered
        try:
            envelope, event = decode(msg.data, self._type)
        except PoisonEvent as exc:
            await self._dead_letter(msg, str(exc), delivered)
            return
        with consuming(f"consume {self._type.TYPE}", msg.headers, envelope.event_id) as span:
            try:
                if self._authenticate is not None:
                    await self._authenticate(msg.subject, msg.data, msg.headers or {}, event)
                await self._handler(event, envelope)
            except PoisonEvent as exc:
                await self._dead_letter(msg, str(exc), delivered)
                return
            except Exception as exc:
                if span is not None:
                    span.record_exception(exc)
                if delivered >= self._max_deliver:
                    await self._dead_letter(msg, f"{type(exc).__name__}: {exc}", delivered)
                else:
                    log.warning(
                        "handler failed; will retry",
                        exc_info=True,
                        extra={"consumer": self.durable, "delivered": delivered},
                    )
                    await msg.nak(delay=nak_delay(delivered))
                return
        await msg.ack()
        self.handled += 1

    async def _dead_letter(self, msg: Msg, reason: str, delivered: int) -> None:
        headers = dict(msg.headers or {})
        headers.update(
            {
                "Nats-Msg-Id": f"dlq:{self.durable}:{msg.metadata.sequence.stream}",
                "Cic-Dlq-Reason": reason.replace("\r", " ").replace("\n", " ")[:1000],
                "Cic-Dlq-Consumer": self.durable,
                "Cic-Dlq-Deliveries": str(delivered),
                "Cic-Original-Subject": msg.subject,
            }
        )
        await self._bus.js.publish(dlq_subject(msg.subject), msg.data, headers=headers, timeout=5)
        await msg.term()
        self.dead_lettered += 1
        log.error(
            "event dead-lettered",
            extra={"consumer": self.durable, "subject": msg.subject, "reason": reason},
        )
