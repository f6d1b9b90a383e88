"""Rendering a node spec into a SkyPilot task: resources, envs, secrets, setup and run."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cic_common.events import NodeSpec

from cic_provisioner.domain.compute import cluster_name

__all__ = [
    "ENGINE_PORT",
    "AgentInstall",
    "BadSpec",
    "RenderedTask",
    "accelerator_for",
    "render_task",
]

ENGINE_PORT = 8000


class BadSpec(ValueError):
    """The spec cannot be turned into a task (it never will be)."""


@dataclass(frozen=True)
class AgentInstall:
    """How a fresh cloud VM gets the node agent and the engine."""

    agent: str = "cic-node-agent"
    """A pip requirement: a version, a wheel URL or a git URL."""
    vllm: str = "vllm"


@dataclass(frozen=True)
class RenderedTask:
    cluster_name: str
    config: dict[str, Any]
    """The task as SkyPilot's YAML schema has it; secrets are not in it."""
    secrets: dict[str, str]


def accelerator_for(params_billion: float) -> str:
    """GPUs from model size: below 70B one A100-class GPU, up to 200B four H100s,
    beyond that eight."""
    if params_billion < 70:
        return "A100-80GB:1"
    if params_billion <= 200:
        return "H100:4"
    return "H100:8"


def _accelerator(spec: NodeSpec) -> str:
    if spec.accelerator:
        return spec.accelerator
    if spec.params_billion:
        return accelerator_for(spec.params_billion)
    raise BadSpec("a cloud node needs an accelerator (GPU:count) or the model's size")


def _split_infra(infra: str | None) -> tuple[str, str]:
    parts = (infra or "").split("/")
    return (parts[0] or "any"), (parts[1] if len(parts) > 1 else "any")


_RUN = """\
set -e
export CIC_NODE_GPUS="${SKYPILOT_NUM_GPUS_PER_NODE:-1}"
export CIC_CLOUD="$(python3 -c 'import json, os
info = json.loads(os.environ.get("SKYPILOT_CLUSTER_INFO") or "{}")
print(str(info.get("cloud", "none")).lower())')"
export CIC_ADVERTISE_HOST="$(curl -sf --max-time 5 https://checkip.amazonaws.com \\
  || hostname -I | awk '{print $1}')"
exec cic-node-agent
"""


def render_task(
    node_id: str, spec: NodeSpec, secret: str, *, nats_url: str, install: AgentInstall
) -> RenderedTask:
    """One node per cluster, named ``cic-{provider}-{region}-{gpu}-{spot|od}-{id}``.

    Tensor parallelism follows the node's GPU count (``$SKYPILOT_NUM_GPUS_PER_NODE``);
    the node's secret travels in ``secrets`` so SkyPilot never prints or stores it.

    Raises:
        BadSpec: no accelerator can be chosen, or the spec asks for the simulator.
    """
    if spec.engine != "vllm":
        raise BadSpec(f"engine {spec.engine!r} runs on the local backend only")
    accelerator = _accelerator(spec)
    gpu = accelerator.split(":", 1)[0]
    provider, region = _split_infra(spec.infra)
    name = cluster_name(provider=provider, region=region, gpu=gpu, spot=spec.use_spot,
                        node_id=node_id)  # fmt: skip
    resources: dict[str, Any] = {
        "accelerators": accelerator,
        "use_spot": spec.use_spot,
        "ports": [ENGINE_PORT],
    }
    if spec.infra:
        resources["infra"] = spec.infra
    if spec.disk_size:
        resources["disk_size"] = spec.disk_size
    if spec.disk_tier:
        resources["disk_tier"] = spec.disk_tier
    config: dict[str, Any] = {
        "name": name,
        "resources": resources,
        "envs": {
            "CIC_NODE_ID": node_id,
            "CIC_NODE_MODEL": spec.model,
            "CIC_NODE_ENGINE": spec.engine,
            "CIC_NODE_MAX_MODEL_LEN": str(spec.max_model_len),
            "CIC_NODE_ENGINE_ARGS": json.dumps(list(spec.engine_args)),
            "CIC_NATS_URL": nats_url,
            "CIC_ENGINE_HOST": "0.0.0.0",
            "CIC_ENGINE_PORT": str(ENGINE_PORT),
            "CIC_INSTANCE_ID": name,
        },
        "setup": f"pip install --upgrade {install.agent!r} {install.vllm!r}",
        "run": _RUN,
    }
    secrets = {"CIC_NODE_SECRET": secret}
    if "@" in nats_url:  # it carries credentials: a secret too (SkyPilot shows envs)
        secrets["CIC_NATS_URL"] = config["envs"].pop("CIC_NATS_URL")
    return RenderedTask(name, config, secrets)
