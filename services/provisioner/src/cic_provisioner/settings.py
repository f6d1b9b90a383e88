"""Provisioner settings (``CIC_*`` environment variables)."""

from __future__ import annotations

from pathlib import Path

from cic_common.settings import CommonSettings
from pydantic import Field

__all__ = ["ProvisionerSettings"]


class ProvisionerSettings(CommonSettings):
    state_dir: Path = Field(Path(".cic"), description="where the local backend keeps its nodes")
    heartbeat_interval: float = Field(10.0, gt=0, description="heartbeat period of new nodes")
    launch_concurrency: int = Field(8, ge=1, description="launches handled at once")
    stop_timeout: float = Field(15.0, gt=0, description="seconds a node gets to drain")
    node_env: dict[str, str] = Field(
        default_factory=dict,
        description='JSON: extra environment of local nodes, e.g. {"CIC_CLOUD": "aws"}',
    )
