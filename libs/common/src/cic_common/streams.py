"""The JetStream streams and subjects of the control plane, declared in one place."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from cic_common.events import EVENT_TYPES, Heartbeat

__all__ = [
    "DLQ_PREFIX",
    "INVENTORY_SUBJECT",
    "PRICES_SUBJECT",
    "STREAMS",
    "StreamSpec",
    "dlq_subject",
    "ensure_streams",
]

log = logging.getLogger(__name__)

DLQ_PREFIX = "dlq"
INVENTORY_SUBJECT = "cic.inventory.request"
"""Core NATS request/reply: the provisioner answers with the clusters it knows."""
PRICES_SUBJECT = "cic.prices.request"
"""Core NATS request/reply: the provisioner answers with priced places for a GPU shape."""

_DAY = 24 * 3600


@dataclass(frozen=True)
class StreamSpec:
    """One stream; ``max_age`` in seconds."""

    name: str
    subjects: tuple[str, ...]
    max_age: float
    description: str

    def config(self) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            description=self.description,
            subjects=list(self.subjects),
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_age=self.max_age,
            duplicate_window=120.0,
            max_msg_size=1024 * 1024,
        )


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec(
        name="CIC_EVENTS",
        subjects=tuple(f"cic.{t}.>" for t in sorted(EVENT_TYPES) if t != Heartbeat.TYPE),
        max_age=7 * _DAY,
        description="Control-plane commands and events",
    ),
    StreamSpec(
        name="CIC_HEARTBEATS",
        subjects=(f"cic.{Heartbeat.TYPE}.>",),
        max_age=300.0,
        description="Node heartbeats: frequent and short-lived",
    ),
    StreamSpec(
        name="CIC_DLQ",
        subjects=(f"{DLQ_PREFIX}.>",),
        max_age=14 * _DAY,
        description="Events no consumer could handle, with the reason in the headers",
    ),
)


def dlq_subject(subject: str) -> str:
    """Where a dead event of ``subject`` goes: ``dlq.<subject>``."""
    return f"{DLQ_PREFIX}.{subject}"


def stream_for(subject: str) -> str:
    """The name of the stream that holds ``subject``."""
    if subject.startswith(f"{DLQ_PREFIX}."):
        return "CIC_DLQ"
    if subject.startswith(f"cic.{Heartbeat.TYPE}."):
        return "CIC_HEARTBEATS"
    return "CIC_EVENTS"


async def ensure_streams(js: JetStreamContext, *, update: bool = True) -> None:
    """Create every missing stream and, with ``update``, bring the configuration of the
    others up to date; safe to run at each start of every instance."""
    for spec in STREAMS:
        config = spec.config()
        try:
            await js.add_stream(config)
        except BadRequestError:
            # Exists with another configuration (for example a subject was added).
            if update:
                await js.update_stream(config)
            else:
                log.warning("stream configured otherwise; the scheduler updates it",
                            extra={"stream": spec.name})  # fmt: skip
