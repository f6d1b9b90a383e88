"""Health's work: record what nodes say, judge them, and publish the replica table."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from cic_common.events import (
    Envelope,
    Heartbeat,
    NodeDraining,
    NodeLost,
    NodeReady,
    NodeTerminated,
    PoisonEvent,
)
from cic_common.lifecycle import NodeStatus
from cic_common.replicas import Replica, ReplicaTable

from cic_health.adapters.store import HealthStore, HeartbeatStore, WatchedNode
from cic_health.domain.verdicts import HealthPolicy, NodeFacts, judge, next_status

__all__ = ["HealthMonitor"]

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class HealthMonitor:
    """The sole writer of node verdicts and of the replica table.

    Events only record facts and wake the pass; the pass (level-triggered, under a
    lease) judges every watched node and rewrites the table from scratch, so a lost
    event or a flushed Redis is repaired by the next pass.
    """

    def __init__(
        self,
        store: HealthStore,
        heartbeats: HeartbeatStore,
        table: ReplicaTable,
        policy: HealthPolicy,
        *,
        wake: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._store = store
        self._heartbeats = heartbeats
        self._table = table
        self._policy = policy
        self._wake = wake
        self._clock = clock

    def set_wake(self, wake: Callable[[], None]) -> None:
        self._wake = wake

    async def on_node_ready(self, event: NodeReady, envelope: Envelope) -> None:
        node = await self._store.get(event.node_id)
        if node is None:
            raise PoisonEvent(f"node-ready for unknown node {event.node_id!r}")
        await self._store.record_event(envelope, event.node_id)
        moved = await self._store.transition(
            event.node_id, NodeStatus.ACTIVE, "engine ready", endpoint=event.endpoint,
            ready_at="now",
        )  # fmt: skip
        log.info("node ready", extra={"node_id": event.node_id, "activated": moved})
        self._wake()

    async def on_heartbeat(self, event: Heartbeat, envelope: Envelope) -> None:
        await self._heartbeats.record(event, self._clock())

    async def on_node_gone(
        self, event: NodeDraining | NodeTerminated | NodeLost, envelope: Envelope
    ) -> None:
        """Draining, terminated or lost: rewrite the table now, not at the next tick."""
        self._wake()

    async def due(self) -> list[datetime]:
        """The loop's fetch: one pass, judged at this instant."""
        return [self._clock()]

    async def check(self, now: datetime) -> None:
        """Judge every watched node, then replace the replica table."""
        nodes = await self._store.watched()
        beats = await self._heartbeats.latest([n.id for n in nodes])
        routable: dict[str, list[Replica]] = {}
        for node in nodes:
            record = beats.get(node.id)
            status = NodeStatus(node.status)
            if status is not NodeStatus.DRAINING:
                facts = NodeFacts(
                    status=status,
                    last_heartbeat=record.received_at if record else None,
                    engine_state=record.beat.engine_state if record else None,
                    ready_at=node.ready_at,
                    status_since=node.status_since,
                )
                verdict = judge(facts, now, self._policy)
                target = next_status(status, verdict)
                if target is not None and await self._store.transition(
                    node.id, target, f"health: {verdict.value}"
                ):
                    log.info("verdict", extra={"node_id": node.id, "status": target.value})
                    status = target
            replica = _replica(node, status, record.beat if record else None)
            if replica is not None:
                routable.setdefault(node.model, []).append(replica)
        await self._table.replace(routable)
        await self._heartbeats.forget({n.id for n in nodes})


def _replica(node: WatchedNode, status: NodeStatus, beat: Heartbeat | None) -> Replica | None:
    """Active nodes take traffic; draining ones stay listed, flagged, for in-flight work."""
    if node.endpoint is None or status not in (NodeStatus.ACTIVE, NodeStatus.DRAINING):
        return None
    return Replica(
        node_id=node.id,
        deployment_id=node.deployment_id,
        model=node.model,
        endpoint=node.endpoint,
        draining=status is NodeStatus.DRAINING,
        requests_running=beat.requests_running if beat else 0.0,
        requests_waiting=beat.requests_waiting if beat else 0.0,
        kv_cache_usage=beat.kv_cache_usage if beat else 0.0,
    )
