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
    backends: list[str] = Field(
        default_factory=lambda: ["local"], description='JSON list: "local", "skypilot"'
    )
    agent_package: str = Field("cic-node-agent", description="pip requirement for cloud nodes")
    vllm_package: str = Field("vllm", description="pip requirement for cloud nodes")
    skypilot_concurrency: int = Field(4, ge=1, description="SkyPilot launches at once")
    skypilot_launch_timeout: float = Field(1800.0, gt=0)
    catalog_dir: Path = Field(Path("~/.sky/catalogs/v8"), description="SkyPilot catalogs")
    node_nats_url: str | None = Field(
        None, description="the NATS address nodes connect to, with the node user's "
        "credentials where NATS has users (deploy/nats); default: the provisioner's own"
    )  # fmt: skip
    local_launch_delay: float = Field(
        0.0, ge=0, description="seconds a local launch takes before its node starts, as on a "
        "cloud (to test what happens meanwhile)"
    )  # fmt: skip
    node_env: dict[str, str] = Field(
        default_factory=dict,
        description='JSON: extra environment of local nodes, e.g. {"CIC_CLOUD": "aws"};'
        ' "{node_id}" in a value is the node id',
    )
