"""The scheduler's reactions: every event leads to a reconcile of one deployment."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from cic_common.bus import Publisher
from cic_common.events import (
    DeploymentChanged,
    Envelope,
    LaunchFailed,
    NodeDraining,
    NodeLost,
    NodeTerminated,
    TerminationWarning,
)
from cic_common.lifecycle import NodeStatus
from cic_common.nodes import NodeRepository

from cic_scheduler.adapters.store import SchedulerStore
from cic_scheduler.domain.planning import Decision, DeploymentView, NodeView, plan

__all__ = ["Scheduler"]

log = logging.getLogger(__name__)


class Scheduler:
    """Holds every deployment at its replica count.

    Each handler is idempotent: it reconciles the deployment concerned, and a pass with
    nothing to do changes nothing. The periodic loop calls ``reconcile`` for every
    deployment, so a lost event only delays convergence.
    """

    def __init__(
        self, store: SchedulerStore, nodes: NodeRepository, bus: Publisher, resend_after: float
    ) -> None:
        self._store = store
        self._nodes = nodes
        self._bus = bus
        self._resend_after = timedelta(seconds=resend_after)

    def _planner(self, deployment: DeploymentView, nodes: list[NodeView]) -> list[Decision]:
        return plan(deployment, nodes, datetime.now(UTC), self._resend_after)

    async def reconcile(self, deployment_id: str) -> None:
        outbox = await self._store.reconcile(deployment_id, self._planner)
        for event, msg_id in outbox:
            # A failure here leaves command_sent_at set: the command is resent later.
            await self._bus.publish(event, msg_id=msg_id or None)
        if outbox:
            log.info(
                "reconciled",
                extra={"deployment": deployment_id, "events": [e.TYPE for e, _ in outbox]},
            )

    async def on_deployment_changed(self, event: DeploymentChanged, _: Envelope) -> None:
        await self.reconcile(event.deployment_id)

    async def on_node_gone(
        self, event: NodeTerminated | LaunchFailed | NodeLost, _: Envelope
    ) -> None:
        deployment_id = await self._store.deployment_of(event.node_id)
        if deployment_id is not None:
            await self.reconcile(deployment_id)

    async def on_termination_warning(self, event: TerminationWarning, envelope: Envelope) -> None:
        """Stop routing to the warned node and replace it before it dies."""
        await self._nodes.record_event(envelope, event.node_id)
        reason = f"termination warning from {event.source}, deadline {event.deadline.isoformat()}"
        if await self._nodes.transition(event.node_id, NodeStatus.DRAINING, reason):
            await self._bus.publish(NodeDraining(node_id=event.node_id, reason=reason))
        deployment_id = await self._store.deployment_of(event.node_id)
        if deployment_id is not None:
            await self.reconcile(deployment_id)
