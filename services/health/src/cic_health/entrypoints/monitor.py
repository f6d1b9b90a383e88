"""Health's work: record what nodes say, judge them, and publish the replica table."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

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

from cic_health.adapters.poller import EnginePoller, PollRecord, PollStore
from cic_health.adapters.store import HealthStore, HeartbeatStore, WatchedNode
from cic_health.domain.verdicts import HealthPolicy, NodeFacts, Verdict, judge, next_status

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
        poller: EnginePoller | None = None,
        polls: PollStore | None = None,
        poll_interval: timedelta = timedelta(seconds=10),
        wake: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._store = store
        self._heartbeats = heartbeats
        self._table = table
        self._policy = policy
        self._poller = poller or EnginePoller()
        self._polls = polls or PollStore(heartbeats.redis)
        self._poll_interval = poll_interval
        self._listed: dict[str, Replica] = {}
        """What this instance last wrote to the table, for heartbeats to refresh."""
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
        """Record it; and when the node is routable, put its load in the table now
        rather than at the next pass, so routing weights are fresh."""
        await self._heartbeats.record(event, self._clock())
        listed = self._listed.get(event.node_id)
        if listed is not None and event.engine_state == "ready":
            fresh = listed.model_copy(update={
                "requests_running": event.requests_running,
                "requests_waiting": event.requests_waiting,
                "kv_cache_usage": event.kv_cache_usage,
                "requests_per_second": event.requests_per_second,
                "latency_p95": event.latency_p95,
            })  # fmt: skip
            if await self._table.refresh(fresh):
                self._listed[event.node_id] = fresh

    async def on_node_gone(
        self, event: NodeDraining | NodeTerminated | NodeLost, envelope: Envelope
    ) -> None:
        """Draining, terminated or lost: rewrite the table now, not at the next tick."""
        self._wake()

    async def due(self) -> list[datetime]:
        """The loop's fetch: one pass, judged at this instant."""
        return [self._clock()]

    async def check(self, now: datetime) -> None:
        """Poll the engines due, judge every watched node, then replace the table."""
        nodes = await self._store.watched()
        ids = [n.id for n in nodes]
        beats = await self._heartbeats.latest(ids)
        polls = await self._poll(nodes, now)
        routable: dict[str, list[Replica]] = {}
        for node in nodes:
            record, poll = beats.get(node.id), polls.get(node.id)
            status = NodeStatus(node.status)
            verdict = None
            if status is not NodeStatus.DRAINING:
                facts = NodeFacts(
                    status=status,
                    last_heartbeat=record.received_at if record else None,
                    engine_state=record.beat.engine_state if record else None,
                    ready_at=node.ready_at,
                    status_since=node.status_since,
                    poll_failures=poll.failures if poll else 0,
                    poll_successes=poll.successes if poll else 0,
                )
                verdict = judge(facts, now, self._policy)
                target = next_status(status, verdict)
                if target is not None and await self._store.transition(
                    node.id, target, f"health: {verdict.value}"
                ):
                    log.info("verdict", extra={"node_id": node.id, "status": target.value})
                    status = target
            replica = _replica(node, status, record.beat if record else None, poll, verdict)
            if replica is not None:
                routable.setdefault(node.model, []).append(replica)
        await self._table.replace(routable)
        self._listed = {r.node_id: r for replicas in routable.values() for r in replicas}
        await self._heartbeats.forget(set(ids))
        await self._polls.forget(set(ids))

    async def _poll(self, nodes: list[WatchedNode], now: datetime) -> dict[str, PollRecord]:
        """Poll the engines of serving nodes whose last poll is ``poll_interval`` old."""
        known = await self._polls.latest([n.id for n in nodes])
        due = [
            n
            for n in nodes
            if n.endpoint
            and n.status in ("active", "unhealthy")
            and (n.id not in known or now - known[n.id].at >= self._poll_interval)
        ]
        if not due:
            return known
        results = await asyncio.gather(*(self._poller.poll(n.endpoint or "") for n in due))
        fresh = await self._polls.record(
            {n.id: r for n, r in zip(due, results, strict=True)}, known, now
        )
        return {**known, **fresh}


def _replica(
    node: WatchedNode,
    status: NodeStatus,
    beat: Heartbeat | None,
    poll: PollRecord | None,
    verdict: Verdict | None,
) -> Replica | None:
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
        requests_per_second=beat.requests_per_second if beat else 0.0,
        latency_p95=beat.latency_p95 if beat else None,
        latency_ms=poll.latency_ms if poll else None,
        degraded=verdict is Verdict.DEGRADED,
    )
