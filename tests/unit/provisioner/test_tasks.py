"""Rendered SkyPilot tasks, each validated by SkyPilot's own parser."""

from __future__ import annotations

import re

import pytest
import sky
from cic_common.events import NodeSpec
from cic_provisioner.domain.tasks import AgentInstall, BadSpec, accelerator_for, render_task

INSTALL = AgentInstall(agent="cic-node-agent==0.1.0", vllm="vllm==0.11.0")


def render(**fields: object) -> tuple[str, dict[str, object], sky.Task]:
    spec = NodeSpec.model_validate({"model": "meta-llama/Llama-3.1-8B", "engine": "vllm",
                                    "backend": "skypilot", **fields})  # fmt: skip
    rendered = render_task("n0123456789ab", spec, "s3cr3t", nats_url="nats://cp:4222",
                           install=INSTALL)  # fmt: skip
    task = sky.Task.from_yaml_config({**rendered.config, "secrets": rendered.secrets})
    return rendered.cluster_name, rendered.config, task


@pytest.mark.parametrize(
    ("fields", "name", "cloud", "region", "zone"),
    [
        ({"accelerator": "H100:1", "use_spot": True}, "cic-any-any-h100-spot-n0123456789ab",
         None, None, None),
        ({"accelerator": "H100:8", "infra": "aws"}, "cic-aws-any-h100-od-n0123456789ab",
         "AWS", None, None),
        ({"accelerator": "A100:2", "infra": "gcp/us-central1", "use_spot": True},
         "cic-gcp-us-central1-a100-spot-n0123456789ab", "GCP", "us-central1", None),
        ({"accelerator": "L4:1", "infra": "aws/us-east-1/us-east-1a"},
         "cic-aws-us-east-1-l4-od-n0123456789ab", "AWS", "us-east-1", "us-east-1a"),
    ],
    ids=["optimizer-chooses", "cloud-only", "cloud-and-region", "full-infra"],
)  # fmt: skip
def test_tasks_validate_and_carry_placement(
    fields: dict[str, object], name: str, cloud: str | None, region: str | None, zone: str | None
) -> None:
    cluster, _, task = render(**fields)
    assert cluster == name
    assert len(cluster) <= 63
    assert re.fullmatch(r"[a-z][a-z0-9-]*", cluster)
    (resources,) = task.resources
    assert resources.use_spot is bool(fields.get("use_spot", False))
    if cloud is None:
        assert resources.cloud is None
    else:
        assert str(resources.cloud) == cloud
    assert resources.region == region
    assert resources.zone == zone
    gpu, count = str(fields["accelerator"]).split(":")
    assert resources.accelerators == {gpu: int(count)}


def test_tensor_parallelism_follows_the_gpu_count_of_the_node() -> None:
    _, config, task = render(accelerator="H100:4")
    assert 'CIC_NODE_GPUS="${SKYPILOT_NUM_GPUS_PER_NODE:-1}"' in str(config["run"])
    assert task.run is not None
    assert "exec cic-node-agent" in str(task.run)


def test_the_node_secret_is_a_secret_not_an_env() -> None:
    _, config, task = render(accelerator="H100:1")
    assert "s3cr3t" not in repr(config)
    assert "CIC_NODE_SECRET" not in task.envs
    assert "CIC_NODE_SECRET" in task.secrets
    assert task.envs["CIC_NATS_URL"] == "nats://cp:4222"
    assert task.envs["CIC_NODE_MODEL"] == "meta-llama/Llama-3.1-8B"


def test_disk_and_ports_reach_skypilot() -> None:
    _, _, task = render(accelerator="H100:1", disk_size=512, disk_tier="best")
    (resources,) = task.resources
    assert resources.disk_size == 512
    assert resources.ports == ["8000"]


@pytest.mark.parametrize(
    ("params", "accelerator"),
    [(8, "A100-80GB:1"), (69.9, "A100-80GB:1"), (70, "H100:4"), (200, "H100:4"),
     (405, "H100:8")],
)  # fmt: skip
def test_gpus_are_sized_from_the_model(params: float, accelerator: str) -> None:
    assert accelerator_for(params) == accelerator
    _, _, task = render(params_billion=params)
    (resources,) = task.resources
    gpu, count = accelerator.split(":")
    assert resources.accelerators == {gpu: int(count)}


@pytest.mark.parametrize(
    ("fields", "message"),
    [({}, "accelerator"), ({"engine": "sim", "accelerator": "H100:1"}, "local backend only")],
)
def test_specs_that_cannot_run_in_a_cloud_are_refused(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(BadSpec, match=message):
        render(**fields)
