"""Admin API payloads for deployments, validated before anything is stored."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = ["DeploymentCreate", "DeploymentPatch", "KeyCreate"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_INFRA = r"^[a-z0-9-]+(/[a-z0-9-]+){0,2}$"
_MODEL = re.compile(
    "^[^*>\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]+$"
)
"""No wildcard, control character or whitespace (those of Python and of JSON Schema's
regular expressions alike, spelt out so the OpenAPI document says what is checked)."""
_LEAST = 0.001
"""The smallest positive figure stored: they are kept as 4-byte floats, to which a smaller
one may round to 0 and break the table's ``> 0`` check."""


def _model_name(value: str) -> str:
    """Model names end up in NATS subjects and Redis keys: no wildcards, no spaces."""
    if not _MODEL.fullmatch(value):
        raise ValueError("a model name has no whitespace, control characters, '*' or '>'")
    return value


Text = Annotated[str, StringConstraints(pattern=r"^[^\x00]*$")]
"""Free text: anything PostgreSQL can store and a command line can carry (no NUL)."""
ModelName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=256),
    Field(json_schema_extra={"pattern": _MODEL.pattern}),
    AfterValidator(_model_name),
]

TenantName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
"""Who owns deployments and keys: lower-case letters, digits, ``-`` and ``_``."""
TENANT_FIELD = Field(
    None,
    description="the owner; an operator's key may name any (default: 'default'), a tenant"
    " admin's only its own (the default)",
)
DEFAULT_TENANT = "default"


class _Payload(BaseModel):
    """A request body: no unknown fields, and numbers are JSON numbers (not ``true`` or
    ``"3"`` read as one; ``2.0`` is JSON's 2, so an integer may come so)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _json_numbers(cls, value: object, info: ValidationInfo) -> object:
        if info.field_name is None or value is None:
            return value
        wanted = cls.model_fields[info.field_name].annotation
        if wanted in _NUMERIC and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError("a number is expected")
        return value


_NUMERIC: tuple[object, ...] = (int, float, int | None, float | None)


class DeploymentCreate(_Payload):
    """``POST /admin/deployments``."""

    model: ModelName = Field(examples=["meta-llama/Llama-3.1-8B"])
    name: str | None = Field(
        None,
        description="unique among live deployments; default: derived",
        json_schema_extra={"pattern": _NAME.pattern},
    )
    replicas: int = Field(1, ge=0, le=256)
    tenant: TenantName | None = TENANT_FIELD
    engine: Literal["sim", "vllm"] = "sim"
    backend: str = Field("local", pattern=r"^[a-z][a-z0-9-]{0,31}$")
    accelerator: str | None = Field(None, pattern=r"^[A-Za-z0-9-]+:[1-9][0-9]?$")
    max_model_len: int = Field(4096, gt=0, le=1_048_576)
    engine_args: list[Text] = Field(default_factory=list, max_length=64)
    spot_policy: Literal["on_demand", "spot_only", "spot_with_fallback"] = "on_demand"
    placement: Literal["spread", "packed"] = Field(
        "spread", description="spread replicas over the locations, or pack the cheapest"
    )
    locations: list[Annotated[str, StringConstraints(pattern=_INFRA)]] = Field(
        default_factory=list,
        max_length=64,
        description="cloud[/region[/zone]] in order of preference; empty: SkyPilot chooses",
        examples=[["aws/us-east-1/us-east-1a", "aws/us-west-2"]],
    )
    spot_spares: int = Field(1, ge=0, le=16, description="spot replicas beyond the count")
    disk_size: int | None = Field(None, gt=0, le=65536, description="GB")
    disk_tier: Literal["low", "medium", "high", "ultra", "best"] | None = None
    params_billion: float | None = Field(None, ge=_LEAST, le=10000)
    autoscaler: Literal["none", "in_flight", "queue", "requests_per_second", "latency"] = Field(
        "none", description="none keeps `replicas`; the others track load within min/max"
    )
    min_replicas: int | None = Field(None, ge=0, le=256)
    max_replicas: int | None = Field(None, ge=1, le=256)
    target_in_flight: float = Field(8.0, ge=_LEAST, le=10000, description="per ready replica")
    target_rps: float = Field(
        5.0,
        ge=_LEAST,
        le=100000,
        description="requests_per_second: finished per second per replica",
    )
    target_p95: float = Field(10.0, ge=_LEAST, le=3600, description="latency: p95 seconds to hold")

    @model_validator(mode="after")
    def _bounds(self) -> DeploymentCreate:
        low = self.min_replicas if self.min_replicas is not None else self.replicas
        high = self.max_replicas if self.max_replicas is not None else self.replicas
        if not low <= self.replicas <= high:
            raise ValueError("min_replicas <= replicas <= max_replicas must hold")
        return self

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.fullmatch(value):
            raise ValueError("lower-case letters, digits and '-', at most 63 characters")
        return value


class DeploymentPatch(_Payload):
    """``PATCH /admin/deployments/{id}``: scale, or change what the nodes run (a rolling
    update: replicas are replaced one at a time, a new one ready before an old one goes)."""

    model_config = ConfigDict(json_schema_extra=lambda s: _not_null(s))

    replicas: int | None = Field(None, ge=0, le=256)
    model: ModelName | None = None
    engine_args: list[Text] | None = Field(None, max_length=64)
    max_model_len: int | None = Field(None, gt=0, le=1_048_576)
    accelerator: str | None = Field(None, pattern=r"^[A-Za-z0-9-]+:[1-9][0-9]?$")

    SPEC_FIELDS: ClassVar[tuple[str, ...]] = (
        "model",
        "engine_args",
        "max_model_len",
        "accelerator",
    )

    REQUIRED: ClassVar[tuple[str, ...]] = ("replicas", "model", "engine_args", "max_model_len")
    """Fields that may be left out but not set to null (only the accelerator may be)."""

    @model_validator(mode="after")
    def _something(self) -> DeploymentPatch:
        if not self.model_fields_set:
            raise ValueError("nothing to change")
        nulled = [
            f for f in self.REQUIRED if f in self.model_fields_set and getattr(self, f) is None
        ]
        if nulled:
            raise ValueError(f"{', '.join(nulled)}: may be left out but not null")
        return self

    def changes(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.model_fields_set}


def _not_null(schema: dict[str, Any]) -> None:
    """The patch's schema: some field, and none of ``REQUIRED`` null."""
    schema["minProperties"] = 1
    for name in DeploymentPatch.REQUIRED:
        field = schema["properties"][name]
        field.update(next(s for s in field.pop("anyOf") if s.get("type") != "null"))


class KeyCreate(_Payload):
    """``POST /admin/keys``."""

    name: Text = Field(min_length=1, max_length=100)
    scope: Literal["admin", "user"] = "user"
    tenant: TenantName | None = Field(
        None,
        description="the owner; an operator's key may name any (an admin key without one is"
        " an operator's; a user key without one is 'default''s), a tenant admin's only its own",
    )
    allowed_models: list[ModelName] | None = Field(None, description="None: every model")
    rpm_limit: int | None = Field(
        None, gt=0, le=10_000_000, description="requests per minute, all gateways together"
    )
    tpm_limit: int | None = Field(
        None,
        gt=0,
        le=1_000_000_000,
        description="tokens (prompt and completion) per minute, all gateways together",
    )
