"""Admin API payloads for deployments, validated before anything is stored."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["DeploymentCreate", "DeploymentPatch", "KeyCreate"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class DeploymentCreate(BaseModel):
    """``POST /admin/deployments``."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=256, examples=["meta-llama/Llama-3.1-8B"])
    name: str | None = Field(None, description="unique among live deployments; default: derived")
    replicas: int = Field(1, ge=0, le=256)
    engine: Literal["sim", "vllm"] = "sim"
    backend: str = Field("local", pattern=r"^[a-z][a-z0-9-]{0,31}$")
    accelerator: str | None = Field(None, pattern=r"^[A-Za-z0-9-]+:[1-9][0-9]?$")
    use_spot: bool = False
    max_model_len: int = Field(4096, gt=0, le=1_048_576)
    engine_args: list[str] = Field(default_factory=list, max_length=64)
    infra: str | None = Field(
        None, pattern=r"^[a-z0-9-]+(/[a-z0-9-]+){0,2}$", examples=["aws/us-east-1"]
    )
    disk_size: int | None = Field(None, gt=0, le=65536, description="GB")
    disk_tier: Literal["low", "medium", "high", "ultra", "best"] | None = None
    params_billion: float | None = Field(None, gt=0, le=10000)
    spot_fallback: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError("lower-case letters, digits and '-', at most 63 characters")
        return value

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        if any(c.isspace() for c in value) or any(c in value for c in "*>"):
            raise ValueError("a model name has no whitespace, '*' or '>'")
        return value


class DeploymentPatch(BaseModel):
    """``PATCH /admin/deployments/{id}``: scale (more fields come with rolling updates)."""

    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(ge=0, le=256)


class KeyCreate(BaseModel):
    """``POST /admin/keys``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    scope: Literal["admin", "user"] = "user"
    allowed_models: list[str] | None = Field(None, description="None: every model")
