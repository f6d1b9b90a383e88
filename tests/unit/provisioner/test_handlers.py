"""The provisioner's handlers on in-memory fakes of its store, backend and bus."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from cic_common.events import (
    Envelope,
    Event,
    LaunchFailed,
    LaunchRequested,
    NodeLaunched,
    NodeLaunching,
    NodeSpec,
    NodeTerminated,
    PoisonEvent,
    TerminateRequested,
)
from cic_common.lifecycle import TRANSITIONS, NodeStatus
from cic_provisioner.adapters.store import UnknownDeployment
from cic_provisioner.domain.compute import Cluster, LaunchError
from cic_provisioner.entrypoints.handlers import Provisioner

ENVELOPE = Envelope(
    event_id="e1", type="x", schema_version=1, occurred_at=datetime.now(UTC), producer="t", data={}
)


class FakeStore:
    def __init__(self, deployments: set[str]) -> None:
        self.deployments = deployments
        self.status: dict[str, NodeStatus] = {}
        self.events: dict[str, str] = {}

    async def admit(self, request: LaunchRequested) -> NodeStatus:
        if request.node_id not in self.status:
            if request.deployment_id not in self.deployments:
                raise UnknownDeployment(request.deployment_id)
            self.status[request.node_id] = NodeStatus.REQUESTED
        return self.status[request.node_id]

    async def transition(
        self, node_id: str, target: NodeStatus, reason: str = "", **fields: object
    ) -> bool:
        if self.status.get(node_id) not in TRANSITIONS[target]:
            return False
        self.status[node_id] = target
        return True

    async def record_event(self, envelope: Envelope, node_id: str) -> bool:
        return self.events.setdefault(envelope.event_id, node_id) == node_id

    async def node_secret_for_launch(self, node_id: str) -> str:
        return f"secret-of-{node_id}"

    async def status_of(self, node_id: str) -> NodeStatus | None:
        return self.status.get(node_id)

    @contextlib.asynccontextmanager
    async def launch_claim(self, node_id: str) -> AsyncIterator[bool]:
        yield True


class FakeBackend:
    name = "local"

    def __init__(self, fail: bool = False, spot_capacity: bool = True) -> None:
        self.fail = fail
        self.spot_capacity = spot_capacity
        self.running: dict[str, Cluster] = {}
        self.launches = 0
        self.attempts: list[str] = []

    def cluster_name(self, node_id: str, spec: NodeSpec) -> str:
        return f"cic-x-{'spot' if spec.use_spot else 'od'}-{node_id}"

    async def launch(self, node_id: str, spec: NodeSpec, secret: str) -> Cluster:
        self.attempts.append(self.cluster_name(node_id, spec))
        if self.fail:
            raise LaunchError("no capacity", retryable=True)
        if spec.use_spot and not self.spot_capacity:
            raise LaunchError("no spot H100 anywhere", reason_class="no_capacity")
        if node_id not in self.running:
            self.launches += 1
            name = self.cluster_name(node_id, spec)
            self.running[node_id] = Cluster(name, node_id, "local", datetime.now(UTC))
        return self.running[node_id]

    async def terminate(self, node_id: str, *, graceful: bool) -> bool:
        return self.running.pop(node_id, None) is not None

    async def inventory(self) -> list[Cluster]:
        return list(self.running.values())


class FakeBus:
    def __init__(self) -> None:
        self.sent: list[tuple[Event, str | None]] = []

    async def publish(self, event: Event, *, msg_id: str | None = None) -> str:
        self.sent.append((event, msg_id))
        return "id"


def launch(
    node_id: str = "n1", deployment: str = "d1", backend: str = "local", **spec_fields: object
) -> LaunchRequested:
    spec = NodeSpec.model_validate({"model": "m", "backend": backend, **spec_fields})
    return LaunchRequested(node_id=node_id, deployment_id=deployment, spec=spec)


World = tuple[Provisioner, FakeStore, FakeBackend, FakeBus]


@pytest.fixture
def world() -> World:
    store, backend, bus = FakeStore({"d1"}), FakeBackend(), FakeBus()
    return Provisioner(store, {"local": backend}, bus), store, backend, bus


async def test_a_duplicated_launch_starts_one_node(world: World) -> None:
    provisioner, store, backend, bus = world
    await provisioner.on_launch_requested(launch(), ENVELOPE)
    await provisioner.on_launch_requested(launch(), ENVELOPE)
    assert backend.launches == 1
    assert store.status["n1"] is NodeStatus.INITIALIZING
    launched = [e for e, _ in bus.sent if isinstance(e, NodeLaunched)]
    assert {m for e, m in bus.sent if isinstance(e, NodeLaunched)} == {"launched:n1"}
    assert launched[0].cluster_name == "cic-x-od-n1"


async def test_a_launch_for_an_unknown_deployment_is_poison(world: World) -> None:
    provisioner, _, backend, _ = world
    with pytest.raises(PoisonEvent, match="d404"):
        await provisioner.on_launch_requested(launch(deployment="d404"), ENVELOPE)
    assert backend.launches == 0


async def test_a_launch_on_an_unknown_backend_is_poison(world: World) -> None:
    provisioner, _, _, _ = world
    with pytest.raises(PoisonEvent, match="unknown backend 'moon'"):
        await provisioner.on_launch_requested(launch(backend="moon"), ENVELOPE)


async def test_a_failed_launch_is_recorded_and_announced() -> None:
    store, bus = FakeStore({"d1"}), FakeBus()
    provisioner = Provisioner(store, {"local": FakeBackend(fail=True)}, bus)
    await provisioner.on_launch_requested(launch(), ENVELOPE)
    assert store.status["n1"] is NodeStatus.LAUNCH_FAILED
    failed = [e for e, _ in bus.sent if isinstance(e, LaunchFailed)]
    assert failed
    assert failed[0].reason == "no capacity"


async def test_a_launch_after_termination_does_nothing(world: World) -> None:
    provisioner, store, backend, _ = world
    await provisioner.on_launch_requested(launch(), ENVELOPE)
    await provisioner.on_terminate_requested(TerminateRequested(node_id="n1"), ENVELOPE)
    await provisioner.on_launch_requested(launch(), ENVELOPE)
    assert store.status["n1"] is NodeStatus.TERMINATED
    assert backend.running == {}
    assert backend.launches == 1


async def test_terminating_a_node_that_is_gone_succeeds(world: World) -> None:
    provisioner, _, _, bus = world
    await provisioner.on_terminate_requested(TerminateRequested(node_id="ghost"), ENVELOPE)
    assert [type(e) for e, _ in bus.sent] == [NodeTerminated]


async def test_spot_without_capacity_falls_back_to_on_demand_when_allowed() -> None:
    store, bus, backend = FakeStore({"d1"}), FakeBus(), FakeBackend(spot_capacity=False)
    provisioner = Provisioner(store, {"local": backend}, bus)
    await provisioner.on_launch_requested(launch(use_spot=True, spot_fallback=True), ENVELOPE)
    assert backend.attempts == ["cic-x-spot-n1", "cic-x-od-n1"]
    assert store.status["n1"] is NodeStatus.INITIALIZING
    launching = [e for e, _ in bus.sent if isinstance(e, NodeLaunching)]
    assert [e.cluster_name for e in launching] == ["cic-x-spot-n1"]


async def test_spot_without_capacity_fails_with_its_class_when_fallback_is_not_allowed() -> None:
    store, bus, backend = FakeStore({"d1"}), FakeBus(), FakeBackend(spot_capacity=False)
    provisioner = Provisioner(store, {"local": backend}, bus)
    await provisioner.on_launch_requested(launch(use_spot=True), ENVELOPE)
    assert backend.attempts == ["cic-x-spot-n1"]
    failed = [e for e, _ in bus.sent if isinstance(e, LaunchFailed)]
    assert [(e.reason_class, e.retryable) for e in failed] == [("no_capacity", True)]
    assert store.status["n1"] is NodeStatus.LAUNCH_FAILED
