"""Scheduler settings (``CIC_*`` environment variables)."""

from __future__ import annotations

from cic_common.settings import CommonSettings
from pydantic import Field

__all__ = ["SchedulerSettings"]


class SchedulerSettings(CommonSettings):
    reconcile_interval: float = Field(5.0, gt=0, description="seconds between full passes")
    resend_after: float = Field(30.0, gt=0, description="seconds before a command is resent")
    autoscale_interval: float = Field(10.0, gt=0, description="seconds between autoscale passes")
