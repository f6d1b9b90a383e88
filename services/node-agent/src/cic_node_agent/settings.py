"""Node agent settings (``CIC_*`` environment variables, set by the provisioner)."""

from __future__ import annotations

from typing import Literal

from cic_common.settings import CommonSettings
from pydantic import Field

__all__ = ["NodeAgentSettings"]


class NodeAgentSettings(CommonSettings):
    node_id: str = Field(description="this node's id, given by the scheduler")
    node_secret: str = Field(description="signs every event the node publishes", repr=False)
    node_model: str = Field(description="the model the engine serves")
    node_engine: Literal["sim", "vllm"] = "sim"
    node_max_model_len: int = Field(4096, gt=0)
    node_gpus: int = Field(1, ge=1, description="tensor parallel size for vLLM")
    engine_host: str = "127.0.0.1"
    engine_port: int = Field(8000, gt=0, lt=65536)
    advertise_host: str = Field("127.0.0.1", description="address the gateway reaches")
    heartbeat_interval: float = Field(10.0, gt=0)
    engine_ready_timeout: float = Field(600.0, gt=0, description="seconds to first /health")
    engine_restart_limit: int = Field(5, ge=0, description="restarts before failed")
    sim_token_delay: float = Field(0.0, ge=0, description="seconds per token of the simulator")
