"""The SkyPilot backend's own logic around the SDK: every failure on the launch path,
including the lookup that makes a redelivered launch idempotent, comes back as a
classed ``LaunchError``, never as the SDK's bare exception.

The SDK is replaced by a stand-in with the same call shape (``status``/``launch``
return request ids that ``get`` resolves); the real SDK path is covered by
``tests/integration/test_skypilot_sdk.py``.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from cic_common.events import NodeSpec
from cic_provisioner.adapters import skypilot
from cic_provisioner.adapters.skypilot import SkyPilotBackend
from cic_provisioner.bootstrap import build_backends
from cic_provisioner.domain.compute import LaunchError
from cic_provisioner.domain.tasks import AgentInstall
from cic_provisioner.settings import ProvisionerSettings

SPEC = NodeSpec(model="m", engine="vllm", backend="skypilot", accelerator="H100:1", use_spot=True)


class StandInSky:
    """Answers like the SDK: each call gives a request id; ``get`` returns or raises."""

    def __init__(self, *, status: Any, launch: Any = None) -> None:
        self.outcomes = {"status": status, "launch": launch}
        self.launched: list[str] = []
        self.Task = SimpleNamespace(from_yaml_config=lambda config: config)

    def status(self, all_users: bool) -> str:
        return "status"

    def launch(self, task: Any, cluster_name: str, down: bool) -> str:
        self.launched.append(cluster_name)
        return "launch"

    def endpoints(self, cluster: str, port: int) -> str:
        return "endpoints"

    def get(self, request_id: str) -> Any:
        outcome = self.outcomes.get(request_id, {})
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


@pytest.fixture
def backend() -> SkyPilotBackend:
    return SkyPilotBackend(nats_url="nats://cp:4222", install=AgentInstall(), call_timeout=5)


async def test_a_dead_api_server_during_the_lookup_is_a_retryable_unreachable(
    backend: SkyPilotBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    sky = StandInSky(status=RuntimeError("Failed to start SkyPilot API server at http://x"))
    monkeypatch.setattr(skypilot, "_sky", lambda: sky)
    with pytest.raises(LaunchError) as caught:
        await backend.launch("n1", SPEC, "secret")
    assert (caught.value.reason_class, caught.value.retryable) == ("unreachable", True)
    assert str(caught.value).startswith("RuntimeError: Failed to start SkyPilot API server")
    assert sky.launched == []


async def test_a_cloud_refusal_is_classed_from_the_sdk_error(
    backend: SkyPilotBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    NoCloudAccessError = type("NoCloudAccessError", (Exception,), {})
    sky = StandInSky(status=[], launch=NoCloudAccessError("No cloud access available"))
    monkeypatch.setattr(skypilot, "_sky", lambda: sky)
    with pytest.raises(LaunchError) as caught:
        await backend.launch("n1", SPEC, "secret")
    assert (caught.value.reason_class, caught.value.retryable) == ("auth", False)
    assert len(sky.launched) == 1
    assert sky.launched[0].startswith("cic-")


async def test_a_redelivered_launch_finds_its_cluster_and_launches_nothing(
    backend: SkyPilotBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = backend.cluster_name("n1", SPEC)
    sky = StandInSky(status=[{"name": name, "launched_at": 1_700_000_000, "status": "UP"}])
    monkeypatch.setattr(skypilot, "_sky", lambda: sky)
    cluster = await backend.launch("n1", SPEC, "secret")
    assert (cluster.name, cluster.node_id) == (name, "n1")
    assert sky.launched == []


def test_nodes_are_given_the_node_users_nats_address_not_the_provisioners() -> None:
    """Where NATS has users (deploy/nats), a node connects as ``node``: it may publish its
    own three subjects, and holds no service's password."""
    settings = ProvisionerSettings(
        nats_url="nats://provisioner:pr0v@nats:4222", node_nats_url="nats://node:n0de@nats:4222",
        backends=["skypilot"],
    )  # fmt: skip
    backend = build_backends(settings)["skypilot"]
    assert isinstance(backend, SkyPilotBackend)
    spec = NodeSpec(model="m", engine="vllm", backend="skypilot", accelerator="H100:1")
    rendered = backend.render("n0123456789ab", spec, "s3cret" * 4)
    assert rendered.secrets["CIC_NATS_URL"] == "nats://node:n0de@nats:4222"
    assert "pr0v" not in repr(rendered.config)
