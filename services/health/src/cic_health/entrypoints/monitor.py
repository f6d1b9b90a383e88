"""Health's work: record what nodes say, judge them, and publish the replica table."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
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
from cic_health.adapters.store import (
    HealthStore,
    HeartbeatRecord,
    HeartbeatStore,
    WatchedNode,
    figures,
)
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
        pass_interval: timedelta | None = None,
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
        self._pass_interval = pass_interval
        """Spreads polls over passes this far apart (None: every due node, each pass)."""
        self._listed: dict[str, Replica] = {}
        """What this instance last wrote to the table, for heartbeats to refresh."""
        self._written: tuple[int, frozenset[tuple[object, ...]]] | None = None
        """The table version this instance wrote, and its membership."""
        self._watched: set[str] | None = None
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
        listed = self._listed.get(event.node_id)
        fresh = None
        if listed is not None and event.engine_state == "ready":
            fresh = listed.model_copy(update=figures(event))
        if await self._heartbeats.record(event, self._clock(), fresh) and fresh is not None:
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
        """Poll the engines due, judge every watched node, then publish the table."""
        nodes = await self._store.watched()
        ids = [n.id for n in nodes]
        beats = await self._heartbeats.latest(ids)
        polls = await self._poll(nodes, now)
        routable: list[_Routable] = []
        for count, node in enumerate(nodes, 1):
            if count % 500 == 0:
                await asyncio.sleep(0)  # heartbeats go on meanwhile: a big pass is long
            record, poll = beats.get(node.id), polls.get(node.id)
            status = NodeStatus(node.status)
            verdict = None
            if status is not NodeStatus.DRAINING:
                facts = NodeFacts(
                    status=status,
                    last_heartbeat=record.received_at if record else None,
                    engine_state=record.engine_state if record else None,
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
            if node.endpoint is not None and status in _ROUTED:
                routable.append(_Routable(node, status, record, poll, verdict))
        await self._publish(routable)
        await self._forget(set(ids))

    async def _publish(self, routable: list[_Routable]) -> None:
        """Replace the table when its membership changed, or when it is not the one
        this instance wrote (another instance wrote since, or Redis lost it). Load
        figures alone do not make a new version: heartbeats keep them fresh in place,
        and gateways re-read the table only on a new version."""
        members = frozenset(r.member() for r in routable)
        if self._written is None or self._written != (await self._table.version(), members):
            table: dict[str, list[Replica]] = {}
            for r in routable:
                table.setdefault(r.node.model, []).append(r.replica())
            version = await self._table.replace(table)
            self._written = (version, members)
            self._listed = {r.node_id: r for replicas in table.values() for r in replicas}
            return
        # The same replicas: only the latency of health's own polls moves here.
        polled = [
            self._listed[r.node.id].model_copy(update={"latency_ms": r.poll.latency_ms})
            for r in routable
            if r.poll is not None and r.poll.latency_ms != self._listed[r.node.id].latency_ms
        ]
        if polled:
            await self._table.refresh(*polled)
            self._listed.update((r.node_id, r) for r in polled)

    async def _forget(self, watched: set[str]) -> None:
        """Drop the records of nodes no longer watched (all strays, on the first pass)."""
        if self._watched is None:
            await self._heartbeats.sweep(watched)
            await self._polls.sweep(watched)
        else:
            await self._heartbeats.drop(self._watched - watched)
            await self._polls.drop(self._watched - watched)
        self._watched = watched

    async def _poll(self, nodes: list[WatchedNode], now: datetime) -> dict[str, PollRecord]:
        """Poll the engines of serving nodes whose last poll is ``poll_interval`` old,
        the longest unpolled first, and per pass no more than their share of the
        interval: polls stay spread evenly however many nodes start at once."""
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
        if self._pass_interval and self._poll_interval:
            share = self._pass_interval / self._poll_interval
            due.sort(key=lambda n: known[n.id].at if n.id in known else _NEVER)
            due = due[: max(1, math.ceil(len(nodes) * share * 1.5))]
        results = await asyncio.gather(*(self._poller.poll(n.endpoint or "") for n in due))
        fresh = await self._polls.record(
            {n.id: r for n, r in zip(due, results, strict=True)}, known, now
        )
        return {**known, **fresh}


_ROUTED = (NodeStatus.ACTIVE, NodeStatus.DRAINING)
"""Active nodes take traffic; draining ones stay listed, flagged, for in-flight work."""
_NEVER = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class _Routable:
    node: WatchedNode
    status: NodeStatus
    beat: HeartbeatRecord | None
    poll: PollRecord | None
    verdict: Verdict | None

    def member(self) -> tuple[object, ...]:
        """What routing depends on besides load figures."""
        n = self.node
        return (n.id, n.model, n.deployment_id, n.endpoint, self.status, self.verdict)

    def replica(self) -> Replica:
        n = self.node
        return Replica(
            node_id=n.id,
            deployment_id=n.deployment_id,
            model=n.model,
            endpoint=n.endpoint or "",
            draining=self.status is NodeStatus.DRAINING,
            **(self.beat.figures if self.beat else {}),
            latency_ms=self.poll.latency_ms if self.poll else None,
            degraded=self.verdict is Verdict.DEGRADED,
        )
