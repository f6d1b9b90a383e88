"""Reconciler settings (``CIC_*`` environment variables)."""

from __future__ import annotations

from cic_common.settings import CommonSettings
from pydantic import Field

__all__ = ["ReconcilerSettings"]


class ReconcilerSettings(CommonSettings):
    reconcile_interval: float = Field(120.0, gt=0, description="seconds between passes")
    orphan_grace: float = Field(600.0, ge=0, description="age before an unowned cluster goes")
    ghost_grace: float = Field(60.0, ge=0, description="age before a missing cluster counts")
    inventory_timeout: float = Field(30.0, gt=0, description="seconds to wait for inventory")
    stuck_launch: float = Field(1200.0, gt=0, description="seconds before a launch is resent")
    give_up_launch: float = Field(3600.0, gt=0, description="seconds before it is given up")
