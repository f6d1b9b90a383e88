"""The event bus: publishing with de-duplication, and consumers that never drop an event."""

from __future__ import annotations

from typing import Protocol, TypeVar
from urllib.parse import urlsplit

import nats
from nats.aio.client import Client

from cic_common.consumer import (
    Authenticator,
    BatchHandler,
    Consumer,
    Delivery,
    Handler,
    nak_delay,
)
from cic_common.events import Event, encode
from cic_common.permissions import inbox_prefix
from cic_common.signing import SIGNATURE_HEADER, signature_header
from cic_common.streams import ensure_streams
from cic_common.telemetry import inject_headers

__all__ = ["Bus", "Consumer", "Handler", "Publisher", "nak_delay"]

E = TypeVar("E", bound=Event)


class Publisher(Protocol):
    """What handlers need of the bus; tests pass an in-memory one."""

    async def publish(self, event: Event, *, msg_id: str | None = None) -> str: ...


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
        update_streams: bool = True,
        signing_secret: str | None = None,
        signing_key_id: str = "node",
    ) -> Bus:
        """Connect and, with ``declare``, make sure the streams exist, and with
        ``update_streams`` that they are configured as declared (control-plane services
        declare, the scheduler alone updates; node agents only publish, signing with
        ``signing_secret``; a trusted tool signs as ``tool/<name>``)."""
        user = urlsplit(url.split(",")[0]).username
        nc = await nats.connect(
            url,
            name=producer,
            inbox_prefix=inbox_prefix(user) if user else "_INBOX",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=2,
        )
        bus = cls(nc, producer, signing_secret, signing_key_id)
        if declare:
            await ensure_streams(bus.js, update=update_streams)
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
        superseded: bool = False,
    ) -> Consumer[E]:
        """A durable pull consumer of every ``event_type`` event; instances sharing
        ``durable`` share the work (each event goes to one of them), ``concurrency``
        events at a time. With ``authenticate``, an event it refuses is dead-lettered
        unhandled. ``linger`` (seconds): after a fetch that did not fill every free
        slot, wait this long before the next, so a steady stream is taken in batches
        rather than one pull request per event or two (worth it for frequent events
        such as heartbeats).

        ``superseded``: each event is state the next one of its sender replaces (a
        heartbeat), so it is delivered at most once, without acks: an event whose
        handler fails is logged and dropped rather than retried late, and the server
        keeps no record of events in flight. Poison is still dead-lettered."""
        delivery = Delivery(max_deliver, concurrency, ack_wait, deliver_new, linger, superseded)
        return Consumer(self, event_type, durable, delivery, handler=handler,
                        authenticate=authenticate)  # fmt: skip

    def batch_consumer(
        self,
        event_type: type[E],
        durable: str,
        handler: BatchHandler[E],
        *,
        batch: int = 64,
        max_deliver: int = 5,
        deliver_new: bool = False,
        authenticate: Authenticator | None = None,
        linger: float = 0.0,
        superseded: bool = False,
    ) -> Consumer[E]:
        """As ``consumer``, but ``handler`` takes the events of each fetch (up to
        ``batch``) in one call, which succeeds or fails for all of them: for frequent
        events whose handling is one write however many there are."""
        delivery = Delivery(max_deliver, batch, 30.0, deliver_new, linger, superseded)
        return Consumer(self, event_type, durable, delivery, batch_handler=handler,
                        authenticate=authenticate)  # fmt: skip

    async def close(self) -> None:
        if not self.nc.is_closed:
            await self.nc.drain()
