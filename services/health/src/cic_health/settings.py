"""Health settings (``CIC_*`` environment variables)."""

from __future__ import annotations

from cic_common.settings import CommonSettings
from pydantic import Field

__all__ = ["HealthSettings"]


class HealthSettings(CommonSettings):
    check_interval: float = Field(5.0, gt=0, description="seconds between verdict passes")
    late_after: float = Field(30.0, gt=0, description="seconds without a heartbeat: unhealthy")
    dead_after: float = Field(120.0, gt=0, description="seconds unhealthy: dead")
    poll_interval: float = Field(10.0, gt=0, description="seconds between polls of an engine")
    poll_timeout: float = Field(2.0, gt=0, description="seconds an engine has to answer")
    poll_concurrency: int = Field(64, ge=1, description="engines polled at once")
    poll_tick: float = Field(
        0.5, gt=0, description="seconds between rounds of polls (spread over the interval)"
    )
    suspect_poll_spacing: float = Field(
        2.0,
        gt=0,
        description="seconds between the polls of a replica a gateway suspects "
        "(a blip shorter than this many polls times this spacing does not take it out)",
    )
    shards: int = Field(
        16, ge=1, description="shards of the nodes that health instances share (all alike)"
    )
