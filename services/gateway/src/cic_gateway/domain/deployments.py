"""Admin API payloads for deployments, validated before anything is stored."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

__all__ = ["DeploymentCreate", "DeploymentPatch", "KeyCreate"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_INFRA = r"^[a-z0-9-]+(/[a-z0-9-]+){0,2}$"


def _model_name(value: str) -> str:
    """Model names end up in NATS subjects and Redis keys: no wildcards, no spaces."""
    if any(c.isspace() for c in value) or any(c in value for c in "*>"):
        raise ValueError("a model name has no whitespace, '*' or '>'")
    return value


class DeploymentCreate(BaseModel):
    """``POST /admin/deployments``."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=256, examples=["meta-llama/Llama-3.1-8B"])
    name: str | None = Field(None, description="unique among live deployments; default: derived")
    replicas: int = Field(1, ge=0, le=256)
    engine: Literal["sim", "vllm"] = "sim"
    backend: str = Field("local", pattern=r"^[a-z][a-z0-9-]{0,31}$")
    accelerator: str | None = Field(None, pattern=r"^[A-Za-z0-9-]+:[1-9][0-9]?$")
    max_model_len: int = Field(4096, gt=0, le=1_048_576)
    engine_args: list[str] = Field(default_factory=list, max_length=64)
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
    params_billion: float | None = Field(None, gt=0, le=10000)
    autoscaler: Literal["none", "in_flight", "queue", "requests_per_second", "latency"] = Field(
        "none", description="none keeps `replicas`; the others track load within min/max"
    )
    min_replicas: int | None = Field(None, ge=0, le=256)
    max_replicas: int | None = Field(None, ge=1, le=256)
    target_in_flight: float = Field(8.0, gt=0, le=10000, description="per ready replica")
    target_rps: float = Field(
        5.0, gt=0, le=100000, description="requests_per_second: finished per second per replica"
    )
    target_p95: float = Field(10.0, gt=0, le=3600, description="latency: p95 seconds to hold")

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
        if value is not None and not _NAME.match(value):
            raise ValueError("lower-case letters, digits and '-', at most 63 characters")
        return value

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        return _model_name(value)


class DeploymentPatch(BaseModel):
    """``PATCH /admin/deployments/{id}``: scale, or change what the nodes run (a rolling
    update: replicas are replaced one at a time, a new one ready before an old one goes)."""

    model_config = ConfigDict(extra="forbid")

    replicas: int | None = Field(None, ge=0, le=256)
    model: str | None = Field(None, min_length=1, max_length=256)
    engine_args: list[str] | None = Field(None, max_length=64)
    max_model_len: int | None = Field(None, gt=0, le=1_048_576)
    accelerator: str | None = Field(None, pattern=r"^[A-Za-z0-9-]+:[1-9][0-9]?$")

    SPEC_FIELDS: ClassVar[tuple[str, ...]] = (
        "model",
        "engine_args",
        "max_model_len",
        "accelerator",
    )

    @model_validator(mode="after")
    def _something(self) -> DeploymentPatch:
        if not self.model_fields_set:
            raise ValueError("nothing to change")
        if self.model is not None:
            _model_name(self.model)
        return self

    def changes(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.model_fields_set}


class KeyCreate(BaseModel):
    """``POST /admin/keys``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    scope: Literal["admin", "user"] = "user"
    allowed_models: list[str] | None = Field(None, description="None: every model")
    rpm_limit: int | None = Field(
        None, gt=0, le=10_000_000, description="requests per minute, all gateways together"
    )
