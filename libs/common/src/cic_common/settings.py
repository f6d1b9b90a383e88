"""Settings read from the environment (``CIC_*``), shared by every service."""

from __future__ import annotations

import os
import socket

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["CommonSettings", "default_instance_id"]


def default_instance_id() -> str:
    """A name that tells two instances of one service apart in logs and leases."""
    return f"{socket.gethostname()}-{os.getpid()}"


class CommonSettings(BaseSettings):
    """What every service needs to reach the shared infrastructure.

    Services subclass this to add their own knobs; all are read from ``CIC_<NAME>``.
    """

    model_config = SettingsConfigDict(env_prefix="CIC_", extra="ignore")

    nats_url: str = Field("nats://127.0.0.1:4222", description="NATS server with JetStream")
    postgres_dsn: str = Field("postgresql://postgres@127.0.0.1:5432/cic")
    redis_url: str = Field("redis://127.0.0.1:6379/0")
    instance_id: str = Field(default_factory=default_instance_id)
    log_level: str = "INFO"
    log_format: str = Field("json", description="json or text")
    otel_exporter: str = Field("none", description="none, console or otlp")
    max_deliver: int = Field(5, ge=1, description="deliveries before an event is dead-lettered")
    trusted_signers: dict[str, str] = Field(
        default_factory=dict,
        description='JSON {"tool name": "secret"}: external tools allowed to sign node events',
    )
