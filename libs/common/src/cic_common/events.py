"""The event contract: typed payloads, the envelope, and how both go to and from bytes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cic_common.ids import new_event_id

__all__ = [
    "EVENT_TYPES", "MAX_EVENT_BYTES", "DeploymentChanged", "Envelope", "Event", "GpuFacts",
    "Heartbeat", "LaunchFailed", "LaunchRequested", "NodeDraining", "NodeLaunched",
    "NodeLaunching", "NodeLost", "NodeReady", "NodeSpec", "NodeTerminated", "PoisonEvent",
    "RequestUsage", "TerminateRequested", "TerminationWarning", "UsageRecorded", "decode",
    "encode",
]  # fmt: skip

MAX_EVENT_BYTES = 256 * 1024
"""Anything larger is not an event we understand; it is dead-lettered unread."""

E = TypeVar("E", bound="Event")


class PoisonEvent(Exception):
    """A message that can never be handled: malformed, of the wrong type or version."""


class Event(BaseModel):
    """Base of every event payload.

    Consumers read tolerantly (unknown fields are ignored) so that adding a field never
    breaks an older consumer; a breaking change is a new ``VERSION`` on a new subject.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    TYPE: ClassVar[str]
    VERSION: ClassVar[int] = 1
    KEY: ClassVar[str] = "node_id"
    """The field whose value is the last token of the subject."""

    def subject(self) -> str:
        """``cic.<type>.<key>``, e.g. ``cic.heartbeat.n0123456789ab``."""
        return f"cic.{self.TYPE}.{getattr(self, self.KEY)}"


class NodeSpec(BaseModel):
    """What a node must run; rendered by a backend into a process or a cloud task."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model: str = Field(description="served model name (HF id or s3:// path)", examples=["demo"])
    engine: Literal["sim", "vllm"] = Field("sim", description="the engine the agent runs")
    backend: str = Field("local", description="provisioner backend", examples=["local"])
    accelerator: str | None = Field(None, description="GPU:count", examples=["H100:1"])
    use_spot: bool = False
    max_model_len: int = Field(4096, gt=0)
    engine_args: tuple[str, ...] = ()
    infra: str | None = Field(
        None,
        description="cloud[/region[/zone]]; none lets SkyPilot choose the cheapest",
        examples=["aws/us-east-1"],
    )
    disk_size: int | None = Field(None, gt=0, description="GB")
    disk_tier: Literal["low", "medium", "high", "ultra", "best"] | None = None
    params_billion: float | None = Field(
        None, gt=0, description="model size; picks the GPUs when accelerator is unset"
    )
    spot_fallback: bool = Field(False, description="on-demand when spot capacity runs out")


class LaunchRequested(Event):
    """Command: launch one node for a deployment. Idempotent by ``node_id``."""

    TYPE: ClassVar[str] = "launch-requested"
    node_id: str = Field(
        pattern=r"^[a-z0-9]{1,24}$",
        description="lower-case letters and digits; the last token of the cluster name",
        examples=["n0123456789ab"],
    )
    deployment_id: str = Field(examples=["d0123456789ab"])
    generation: int = Field(1, ge=1, description="the deployment revision the node runs")
    spec: NodeSpec


class NodeLaunching(Event):
    """The provisioner is creating the node; on a cloud this takes minutes."""

    TYPE: ClassVar[str] = "node-launching"
    node_id: str
    cluster_name: str = Field(examples=["cic-aws-us-east-1-h100-spot-n0123456789ab"])
    backend: str


class NodeLaunched(Event):
    """The backend created the node; its agent is starting the engine."""

    TYPE: ClassVar[str] = "node-launched"
    node_id: str
    cluster_name: str = Field(examples=["cic-local-host-cpu-od-n0123456789ab"])
    backend: str
    endpoint: str | None = Field(None, description="the engine's address, when the backend knows")


class LaunchFailed(Event):
    """The backend could not create the node."""

    TYPE: ClassVar[str] = "launch-failed"
    node_id: str
    reason: str
    reason_class: Literal[
        "quota", "auth", "no_capacity", "bad_spec", "timeout", "unreachable", "internal"
    ] = Field("internal", description="what kind of failure, for retry and fallback policy")
    retryable: bool = True


class NodeReady(Event):
    """The node's engine answers; the node may take traffic at ``endpoint``."""

    TYPE: ClassVar[str] = "node-ready"
    node_id: str
    endpoint: str = Field(description="base URL of the engine", examples=["http://10.0.0.5:8000"])
    model: str


class GpuFacts(BaseModel):
    """One GPU as ``nvidia-smi`` reports it; unknown values are null."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    index: int = Field(ge=0)
    name: str
    utilization_pct: float | None = None
    memory_used_mib: float | None = None
    memory_total_mib: float | None = None
    temperature_c: float | None = None


class Heartbeat(Event):
    """The agent is alive; engine facts for health verdicts and routing weights."""

    TYPE: ClassVar[str] = "heartbeat"
    node_id: str
    seq: int = Field(0, ge=0)
    engine_state: Literal["starting", "ready", "restarting", "failed", "stopping"] = "ready"
    requests_running: float = Field(0.0, description="vllm:num_requests_running")
    requests_waiting: float = Field(0.0, description="vllm:num_requests_waiting")
    kv_cache_usage: float = Field(0.0, ge=0.0, le=1.0, description="vllm:kv_cache_usage_perc")
    tokens_per_second: float = Field(0.0, ge=0.0, description="generated tokens per second")
    requests_per_second: float = Field(0.0, ge=0.0, description="finished requests per second")
    latency_p95: float | None = Field(
        None,
        ge=0.0,
        description="p95 end-to-end latency (s) of the requests finished since "
        "the last heartbeat; null when none finished",
    )
    rebalance_recommended: bool = Field(False, description="the cloud warns of elevated risk")
    gpus: tuple[GpuFacts, ...] = Field((), description="empty where nvidia-smi is absent")


class TerminationWarning(Event):
    """The cloud will take the node away at ``deadline`` (spot preemption)."""

    TYPE: ClassVar[str] = "termination-warning"
    node_id: str
    deadline: datetime
    source: str = Field("unknown", examples=["aws-imds", "gcp-metadata", "azure-events"])


class NodeDraining(Event):
    """The scheduler stopped sending new work to the node; it will be terminated."""

    TYPE: ClassVar[str] = "node-draining"
    node_id: str
    reason: str


class TerminateRequested(Event):
    """Command: take the node down. Idempotent: terminating a gone node succeeds."""

    TYPE: ClassVar[str] = "terminate-requested"
    node_id: str
    graceful: bool = True
    reason: str = "requested"


class NodeTerminated(Event):
    """The node is gone."""

    TYPE: ClassVar[str] = "node-terminated"
    node_id: str
    reason: str = ""


class NodeLost(Event):
    """The node is in our state but no longer exists at its backend (a ghost)."""

    TYPE: ClassVar[str] = "node-lost"
    node_id: str
    reason: str = ""


class ReplicaSuspected(Event):
    """A gateway saw the replica fail a request; health polls its engine at once.

    Refused or reset, a 5xx before any answer, or its health check failing while
    requests waited. The verdict stays health's, from its polls.
    """

    TYPE: ClassVar[str] = "replica-suspected"
    node_id: str
    gateway: str = Field(min_length=1, max_length=128, description="the instance that saw it")
    reason: str = Field("", max_length=500)


class DeploymentChanged(Event):
    """A deployment was created, changed or deleted; ``generation`` bumps on each change."""

    TYPE: ClassVar[str] = "deployment-changed"
    KEY: ClassVar[str] = "deployment_id"
    deployment_id: str
    generation: int = Field(ge=1)
    deleted: bool = False


class RequestUsage(BaseModel):
    """What one answered request used (once, whatever the retries behind it)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    request_id: str = Field(min_length=1, max_length=64)
    key_id: str
    model: str
    node_id: str = Field(description="the replica that answered")
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    streamed: bool = False


class UsageRecorded(Event):
    """What a gateway's answered requests used, a batch gathered for up to 100 ms.

    One event per batch, not per request; a request is stored once, by its id, however
    often its batch is delivered.
    """

    TYPE: ClassVar[str] = "usage-recorded"
    VERSION: ClassVar[int] = 2
    KEY: ClassVar[str] = "gateway"
    gateway: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$",
                         description="the instance that answered them")  # fmt: skip
    requests: list[RequestUsage] = Field(min_length=1, max_length=500, description="1 to 500")


EVENT_TYPES: dict[str, type[Event]] = {cls.TYPE: cls for cls in Event.__subclasses__()}
"""Every event type by name, derived from the classes above."""


class Envelope(BaseModel):
    """What travels on the wire: metadata plus the typed payload in ``data``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: str = Field(min_length=1, max_length=64)
    type: str
    schema_version: int
    occurred_at: datetime
    producer: str
    data: dict[str, Any]


def encode(event: Event, *, producer: str, event_id: str | None = None) -> tuple[str, bytes]:
    """Wrap ``event`` in an envelope; returns the event id and the bytes to publish."""
    eid = event_id or new_event_id()
    envelope = {
        "event_id": eid,
        "type": event.TYPE,
        "schema_version": event.VERSION,
        "occurred_at": datetime.now(UTC).isoformat(),
        "producer": producer,
        "data": event.model_dump(mode="json"),
    }
    return eid, json.dumps(envelope, separators=(",", ":")).encode()


def decode(raw: bytes, expected: type[E]) -> tuple[Envelope, E]:
    """Parse bytes into an envelope and its payload of type ``expected``.

    Raises:
        PoisonEvent: the bytes are too large, not JSON, not an envelope, of another type or
            schema version, or the payload does not validate. Such a message never will.
    """
    if len(raw) > MAX_EVENT_BYTES:
        raise PoisonEvent(f"event of {len(raw)} bytes exceeds {MAX_EVENT_BYTES}")
    try:
        envelope = Envelope.model_validate_json(raw)
    except ValidationError as exc:
        raise PoisonEvent(f"not an event envelope: {_brief(exc)}") from exc
    if envelope.type != expected.TYPE:
        raise PoisonEvent(f"expected type {expected.TYPE!r}, got {envelope.type!r}")
    if envelope.schema_version != expected.VERSION:
        raise PoisonEvent(
            f"unsupported schema_version {envelope.schema_version} for {expected.TYPE!r}"
            f" (this consumer reads {expected.VERSION})"
        )
    try:
        payload = expected.model_validate(envelope.data)
    except ValidationError as exc:
        raise PoisonEvent(f"invalid {expected.TYPE!r} payload: {_brief(exc)}") from exc
    return envelope, payload


def _brief(exc: ValidationError) -> str:
    """One line per error, without pydantic's URLs, so it fits in a header."""
    parts = [f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()]
    return "; ".join(parts)[:900]
