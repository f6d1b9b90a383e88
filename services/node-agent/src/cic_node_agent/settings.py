"""Node agent settings (``CIC_*`` environment variables, set by the provisioner)."""

from __future__ import annotations

import os
from typing import Literal

from cic_common.settings import CommonSettings
from pydantic import Field

__all__ = ["NodeAgentSettings"]


def _gpus_of_this_node() -> int:
    """SkyPilot tells every node how many GPUs it has."""
    return int(os.environ.get("SKYPILOT_NUM_GPUS_PER_NODE", "1") or 1)


class NodeAgentSettings(CommonSettings):
    node_id: str = Field(description="this node's id, given by the scheduler")
    node_secret: str = Field(description="signs every event the node publishes", repr=False)
    node_model: str = Field(description="the model the engine serves (HF id or s3:// path)")
    node_engine: Literal["sim", "vllm"] = "sim"
    node_max_model_len: int = Field(4096, gt=0)
    node_gpus: int = Field(default_factory=_gpus_of_this_node, ge=1, description="vLLM TP size")
    node_engine_args: list[str] = Field(default_factory=list, description="JSON list, appended")
    engine_host: str = "127.0.0.1"
    engine_port: int = Field(8000, gt=0, lt=65536)
    advertise_host: str = Field("127.0.0.1", description="address the gateway reaches")
    heartbeat_interval: float = Field(10.0, gt=0)
    engine_ready_timeout: float = Field(600.0, gt=0, description="seconds to first /health")
    engine_restart_limit: int = Field(5, ge=0, description="restarts before failed")
    drain_timeout: float = Field(30.0, gt=0, description="on SIGTERM: seconds for in-flight work")
    sim_token_delay: float = Field(0.0, ge=0, description="seconds per token of the simulator")
    cloud: Literal["aws", "gcp", "azure", "none"] = Field("none", description="preemption watch")
    metadata_url: str | None = Field(None, description="override the cloud's metadata address")
    preemption_poll_interval: float = Field(5.0, gt=0)
    azure_vm_name: str | None = None
