"""What the event-fault scenarios share: a probe node, its valid events, and their fate."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import asyncpg
import httpx
from cic_common.bus import Bus
from cic_common.db import create_pool
from cic_common.events import EVENT_TYPES, Envelope, Event, NodeSpec, RequestUsage, encode
from cic_common.signing import SIGNATURE_HEADER, signature_header
from cic_common.streams import STREAMS, stream_for
from cic_gateway.bootstrap import BOOTSTRAP_ADMIN_ID
from nats.js.api import AckPolicy
from support import eventually

__all__ = ["PROBE_HEADER", "Durable", "ProbeNode", "Probing", "consumers_by_type",
           "envelope_of", "probe_event", "probing", "publish_raw", "settled"]  # fmt: skip

PROBE_HEADER = "Chaos-Probe"
"""Our header on every message we publish: a dead letter keeps the original headers
(docs/events.md), so each letter names the message it came from."""


@dataclass(frozen=True)
class ProbeNode:
    """A node row of a real deployment, already terminated, whose secret we know: events
    about it are valid and signed, and handling them changes nothing that serves."""

    node_id: str
    deployment_id: str
    model: str
    secret: str


async def insert_probe_node(pool: asyncpg.Pool, deployment_id: str, model: str) -> ProbeNode:
    node = ProbeNode(f"nchaos{secrets.token_hex(4)}", deployment_id, model, secrets.token_hex(16))
    # Ended a day ago: older than any back-off, so the scheduler's planning ignores it.
    await pool.execute(
        "INSERT INTO nodes (id, deployment_id, generation, status, spec, backend, secret,"
        " terminated_at, updated_at) VALUES ($1, $2, 1, 'terminated', $3, 'local', $4,"
        " now() - interval '1 day', now() - interval '1 day')",
        node.node_id, deployment_id, {"model": model}, node.secret,
    )  # fmt: skip
    return node


def _usage(node: ProbeNode) -> list[RequestUsage]:
    # A fresh request id per event: the usage table keeps one row per request.
    return [RequestUsage(request_id=f"chaos-{secrets.token_hex(8)}", key_id=BOOTSTRAP_ADMIN_ID,
                         model=node.model, node_id=node.node_id, prompt_tokens=1,
                         completion_tokens=1)]  # fmt: skip


_REQUIRED: dict[str, Callable[[ProbeNode], object]] = {
    "node_id": lambda n: n.node_id,
    "deployment_id": lambda n: n.deployment_id,
    "generation": lambda n: 1,
    "spec": lambda n: NodeSpec(model=n.model),
    "cluster_name": lambda n: f"cic-chaos-{n.node_id}",
    "backend": lambda n: "local",
    "reason": lambda n: "chaos probe",
    "endpoint": lambda n: "http://127.0.0.1:9",
    "model": lambda n: n.model,
    "deadline": lambda n: datetime.now(UTC) + timedelta(hours=1),
    "gateway": lambda n: "chaosgw",
    "requests": _usage,
}
"""A value for each required field, by name: every event type (``EVENT_TYPES``) is built
from these, so a new type is probed as soon as its required fields have one here."""


def probe_event(event_type: type[Event], node: ProbeNode) -> Event:
    """A valid ``event_type`` about ``node``.

    Raises:
        LookupError: a required field has no value in ``_REQUIRED`` yet.
    """
    fields = [n for n, f in event_type.model_fields.items() if f.is_required()]
    missing = [n for n in fields if n not in _REQUIRED]
    if missing:
        raise LookupError(f"no probe value for {event_type.TYPE} fields {missing}")
    return event_type.model_validate({n: _REQUIRED[n](node) for n in fields})


def envelope_of(event: Event) -> dict[str, Any]:
    """The envelope ``event`` travels in, as a dict to tamper with."""
    envelope: dict[str, Any] = json.loads(encode(event, producer="chaos")[1])
    return envelope


async def publish_raw(bus: Bus, subject: str, body: bytes, node: ProbeNode) -> tuple[str, int]:
    """Publish ``body`` as is, signed as ``node`` (node events are refused unsigned, and
    other consumers ignore the header); returns its probe id and stream sequence."""
    probe = secrets.token_hex(8)
    headers = {PROBE_HEADER: probe, "Nats-Msg-Id": f"chaos:{probe}",
               SIGNATURE_HEADER: signature_header(node.secret, subject, body)}  # fmt: skip
    ack = await bus.js.publish(subject, body, headers=headers, timeout=5)
    return probe, ack.seq


@dataclass(frozen=True)
class Durable:
    """A durable consumer, by its stream and name."""

    stream: str
    name: str
    at_most_once: bool
    """Acks nothing (heartbeats): only delivery can be seen from outside."""


async def consumers_by_type(bus: Bus) -> dict[str, list[Durable]]:
    """The durable consumers of each event type, as the running services declared them."""
    found: dict[str, list[Durable]] = {t: [] for t in EVENT_TYPES}
    for spec in STREAMS:
        for info in await bus.js.consumers_info(spec.name):
            config = info.config
            for event_type, durables in found.items():
                if config.filter_subject == f"cic.{event_type}.>":
                    durables.append(Durable(spec.name, info.name,
                                            config.ack_policy == AckPolicy.NONE))  # fmt: skip
    return found


async def settled(bus: Bus, durables: list[Durable], seq: int) -> bool:
    """Whether every one of ``durables`` is done with stream sequence ``seq`` and all
    before it: acked, or dead-lettered (a terminated message counts as acked)."""
    for durable in durables:
        info = await bus.js.consumer_info(durable.stream, durable.name)
        done = info.delivered if durable.at_most_once else info.ack_floor
        if done is None or (done.stream_seq or 0) < seq:
            return False
    return True


@dataclass(frozen=True)
class Probing:
    """What ``probing`` set up."""

    node: ProbeNode
    pool: asyncpg.Pool
    consumers: dict[str, list[Durable]]
    """Every event type's consumers: the services', or this test's where none has one."""
    unread: list[str]
    """The event types no service consumes."""
    declared: dict[str, set[str]]
    """The services' consumers of each type when the test began, by name."""

    async def declared_late(self, bus: Bus) -> dict[str, set[str]]:
        """Service consumers declared since the start: they would have escaped the test."""
        late: dict[str, set[str]] = {}
        for event_type, durables in (await consumers_by_type(bus)).items():
            known = self.declared[event_type] | {d.name for d in self.consumers[event_type]}
            if names := {d.name for d in durables} - known:
                late[event_type] = names
        return late


@contextlib.asynccontextmanager
async def probing(
    admin: httpx.AsyncClient, dsn: str, bus: Bus, model: str
) -> AsyncIterator[Probing]:
    """A deployment whose node is active (so every service is up and consuming), a probe
    node in it, and, for each type no service consumes, the library's consumer run by this
    test as an external tool would: there the dead-letter promise is the library's."""
    created = await admin.post("/admin/deployments", json={"model": model, "replicas": 1})
    assert created.status_code == 201, created.text
    deployment_id = str(created.json()["id"])

    async def active() -> bool:
        listed = await admin.get("/admin/nodes", params={"deployment_id": deployment_id})
        return [n["status"] for n in listed.json()["data"]] == ["active"]

    await eventually(active, within=120)
    pool = await create_pool(dsn)
    consumers = await consumers_by_type(bus)
    declared = {t: {d.name for d in ds} for t, ds in consumers.items()}
    unread = [t for t, durables in consumers.items() if not durables]
    readers = [bus.consumer(EVENT_TYPES[t], f"chaos-{t}", _ignore) for t in unread]
    tasks = [asyncio.create_task(r.run()) for r in readers]
    try:
        for event_type, reader in zip(unread, readers, strict=True):
            stream = stream_for(f"cic.{event_type}.>")
            consumers[event_type] = [Durable(stream, reader.durable, at_most_once=False)]
            await eventually(partial(_declared, bus, stream, reader.durable))
        node = await insert_probe_node(pool, deployment_id, model)
        yield Probing(node, pool, consumers, unread, declared)
    finally:
        for reader in readers:
            reader.stop()
        await asyncio.gather(*tasks)
        await pool.close()


async def _ignore(event: Event, envelope: Envelope) -> None:
    pass


async def _declared(bus: Bus, stream: str, name: str) -> bool:
    return name in {c.name for c in await bus.js.consumers_info(stream)}
