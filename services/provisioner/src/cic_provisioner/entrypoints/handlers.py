"""Event handlers of the provisioner: launch, terminate, and answer inventory requests."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from cic_common.bus import Publisher
from cic_common.events import (
    Envelope,
    LaunchFailed,
    LaunchRequested,
    NodeLaunched,
    NodeLaunching,
    NodeSpec,
    NodeTerminated,
    PoisonEvent,
    TerminateRequested,
)
from cic_common.lifecycle import NodeStatus
from nats.aio.msg import Msg

from cic_provisioner.adapters.store import UnknownDeployment
from cic_provisioner.domain.compute import Cluster, ComputeBackend, LaunchError, launch_plan

__all__ = ["NodeStore", "Provisioner"]

log = logging.getLogger(__name__)

_ALREADY_UNDERWAY = frozenset({NodeStatus.INITIALIZING, NodeStatus.ACTIVE, NodeStatus.UNHEALTHY})


class LaunchInProgress(Exception):
    """Retryable: the event is redelivered once the other launch is done."""


class NodeStore(Protocol):
    async def admit(self, request: LaunchRequested) -> NodeStatus: ...

    async def transition(
        self, node_id: str, target: NodeStatus, reason: str = "", **fields: object
    ) -> bool: ...

    async def record_event(self, envelope: Envelope, node_id: str) -> bool: ...

    async def node_secret_for_launch(self, node_id: str) -> str: ...

    async def status_of(self, node_id: str) -> NodeStatus | None: ...

    def launch_claim(self, node_id: str) -> AbstractAsyncContextManager[bool]: ...


class Provisioner:
    """Carries out launch and terminate commands on the backend each node names.

    Both handlers are idempotent by node id, so a redelivered or duplicated command has
    one effect: the backend's own idempotency covers a crash between its call and the
    database update.
    """

    def __init__(
        self, store: NodeStore, backends: Mapping[str, ComputeBackend], bus: Publisher
    ) -> None:
        self._store = store
        self._backends = backends
        self._bus = bus

    async def on_launch_requested(self, event: LaunchRequested, envelope: Envelope) -> None:
        backend = self._backends.get(event.spec.backend)
        if backend is None:
            known = ", ".join(sorted(self._backends))
            raise PoisonEvent(
                f"unknown backend {event.spec.backend!r} (this provisioner has {known})"
            )
        try:
            status = await self._store.admit(event)
        except UnknownDeployment as exc:
            raise PoisonEvent(str(exc)) from exc
        await self._store.record_event(envelope, event.node_id)
        if status not in (NodeStatus.REQUESTED, NodeStatus.LAUNCHING, *_ALREADY_UNDERWAY):
            log.info("launch skipped", extra={"node_id": event.node_id, "status": status.value})
            return
        node_id = event.node_id
        async with self._store.launch_claim(node_id) as claimed:
            if not claimed:
                # Another instance is launching it: look again once it is done.
                raise LaunchInProgress(f"{node_id} is being launched by another provisioner")
            await self._launch_claimed(backend, node_id, event.spec)

    async def _launch_claimed(self, backend: ComputeBackend, node_id: str, spec: NodeSpec) -> None:
        status = await self._store.status_of(node_id)
        if status not in (NodeStatus.REQUESTED, NodeStatus.LAUNCHING, *_ALREADY_UNDERWAY):
            return
        secret = await self._store.node_secret_for_launch(node_id)
        try:
            cluster = await self._launch(backend, node_id, spec, secret)
        except LaunchError as exc:
            reason = f"{exc.reason_class}: {exc}"
            await self._store.transition(node_id, NodeStatus.LAUNCH_FAILED, reason)
            failed = LaunchFailed(
                node_id=node_id,
                reason=str(exc),
                retryable=exc.retryable,
                reason_class=exc.reason_class,
            )
            await self._bus.publish(failed, msg_id=f"launch-failed:{node_id}")
            return
        await self._store.transition(
            node_id,
            NodeStatus.INITIALIZING,
            "engine starting",
            cluster_name=cluster.name,
            launched_at=cluster.launched_at,
        )
        launched = NodeLaunched(node_id=node_id, cluster_name=cluster.name, backend=backend.name,
                                endpoint=cluster.endpoint)  # fmt: skip
        await self._bus.publish(launched, msg_id=f"launched:{node_id}")

    async def _launch(
        self, backend: ComputeBackend, node_id: str, spec: NodeSpec, secret: str
    ) -> Cluster:
        """Each option of the launch plan in turn (spot, then on-demand when the spec
        allows it) while the failure is a lack of capacity.

        Raises:
            LaunchError: the last option failed too, or a failure other than capacity.
        """
        options = launch_plan(spec)
        for i, option in enumerate(options):
            name = backend.cluster_name(node_id, option)
            if await self._store.transition(node_id, NodeStatus.LAUNCHING, "launching",
                                            backend=backend.name, cluster_name=name):  # fmt: skip
                launching = NodeLaunching(node_id=node_id, cluster_name=name,
                                          backend=backend.name)  # fmt: skip
                await self._bus.publish(launching, msg_id=f"launching:{node_id}")
            try:
                return await backend.launch(node_id, option, secret)
            except LaunchError as exc:
                if exc.reason_class != "no_capacity" or i == len(options) - 1:
                    raise
                log.warning("no capacity; trying the next option", extra={"node_id": node_id})
        raise AssertionError("a launch plan is never empty")

    async def on_terminate_requested(self, event: TerminateRequested, envelope: Envelope) -> None:
        await self._store.record_event(envelope, event.node_id)
        for backend in self._backends.values():
            await backend.terminate(event.node_id, graceful=event.graceful)
        await self._store.transition(
            event.node_id, NodeStatus.TERMINATED, event.reason, terminated_at="now"
        )
        gone = NodeTerminated(node_id=event.node_id, reason=event.reason)
        await self._bus.publish(gone, msg_id=f"terminated:{event.node_id}")

    async def on_inventory_request(self, msg: Msg) -> None:
        """Core NATS request/reply: ``{"clusters": [...], "complete": bool}``."""
        clusters: list[dict[str, str]] = []
        complete = True
        for backend in self._backends.values():
            try:
                found = await backend.inventory()
            except Exception:
                log.exception("inventory failed", extra={"backend": backend.name})
                complete = False
                continue
            clusters += [
                {
                    "name": c.name,
                    "node_id": c.node_id,
                    "backend": c.backend,
                    "launched_at": c.launched_at.isoformat(),
                    "status": c.status,
                }
                for c in found
            ]
        await msg.respond(json.dumps({"clusters": clusters, "complete": complete}).encode())
