"""Health's work: record what nodes say, judge them, and publish the replica table."""

from __future__ import annotations

import asyncio
import logging
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
    ReplicaSuspected,
)
from cic_common.leases import ShardLeases, shard_of
from cic_common.lifecycle import NodeStatus
from cic_common.replicas import Replica, ReplicaTable

from cic_health.adapters.poller import EnginePoller, PollRecord, PollStore
from cic_health.adapters.store import (
    Figures,
    HealthStore,
    HeartbeatRecord,
    HeartbeatStore,
    WatchedNode,
    WatchedNodes,
)
from cic_health.domain.verdicts import (
    HealthPolicy,
    NodeFacts,
    Verdict,
    judge,
    next_status,
    plainly_healthy,
)
from cic_health.entrypoints.polls import EnginePolls

__all__ = ["HealthMonitor"]

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class HealthMonitor:
    """The sole writer of node verdicts and of the replica table.

    Events only record facts and wake the pass. The pass (level-triggered) judges
    every watched node of the shards this instance holds, and makes the table's
    entries for those nodes what they should be, so a lost event, a flushed Redis or
    an instance gone is repaired by the next pass. Several instances share the nodes
    by shard (``ShardLeases``); heartbeats are shared by the stream consumer.
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
        poll_tick: timedelta | None = None,
        hurry_spacing: float = 2.0,
        shards: ShardLeases | None = None,
        wake: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._store = store
        self._nodes = WatchedNodes(store)
        self._heartbeats = heartbeats
        self._table = table
        self._policy = policy
        self._polls = polls or PollStore(heartbeats.redis)
        self.engines = EnginePolls(
            poller or EnginePoller(), self._polls, table, interval=poll_interval, tick=poll_tick
        )
        self._hurry_spacing = hurry_spacing
        self._shards = shards
        self._written: dict[str, tuple[object, ...]] = {}
        """What this instance last wrote to the table per node (its routing facts)."""
        self._watched: set[str] | None = None
        self._held: frozenset[int] | None = None
        self._wake = wake
        self._clock = clock

    def set_wake(self, wake: Callable[[], None]) -> None:
        self._wake = wake

    async def on_node_ready(self, event: NodeReady, envelope: Envelope) -> None:
        node = await self._store.get(event.node_id)
        if node is None:
            raise PoisonEvent(f"node-ready for unknown node {event.node_id!r}")
        await self._store.record_event(envelope, event.node_id)
        # Stamped by the clock heartbeats are stamped with when they arrive: the verdict
        # compares the two (a beat older than node-ready tells of a starting engine).
        moved = await self._store.transition(
            event.node_id, NodeStatus.ACTIVE, "engine ready", endpoint=event.endpoint,
            ready_at=self._clock(),
        )  # fmt: skip
        log.info("node ready", extra={"node_id": event.node_id, "activated": moved})
        self._wake()

    async def on_heartbeats(self, beats: list[tuple[Heartbeat, Envelope]]) -> None:
        """Record them, and put their load in their nodes' table entries now rather
        than at the next pass, so routing weights are fresh."""
        await self._heartbeats.record([beat for beat, _ in beats], self._clock())

    async def on_heartbeat(self, event: Heartbeat, envelope: Envelope) -> None:
        await self.on_heartbeats([(event, envelope)])

    async def on_replica_suspected(self, event: ReplicaSuspected, envelope: Envelope) -> None:
        """A gateway saw the replica fail: its engine is polled now, as many times as
        failing takes, until it answers; failed polls wake the pass, which judges them
        as any others (a replica that answers keeps its place)."""
        node = await self._store.get(event.node_id)
        endpoint = node["endpoint"] if node else None
        if node is None or endpoint is None or NodeStatus(node["status"]) not in _POLLED:
            return  # not serving (or unknown): nothing to poll
        record = await self.engines.hurry(event.node_id, endpoint,
                                          tries=self._policy.poll_failures_to_fail,
                                          spacing=self._hurry_spacing)  # fmt: skip
        failing = record is not None and record.failures > 0
        log.warning("a gateway suspects a replica", extra={
            "node_id": event.node_id, "gateway": event.gateway, "reason": event.reason,
            "engine_answers": not failing,
        })  # fmt: skip
        if failing:
            self._wake()

    async def on_node_gone(
        self, event: NodeDraining | NodeTerminated | NodeLost, envelope: Envelope
    ) -> None:
        """Draining, terminated or lost: rewrite the table now, not at the next tick."""
        self._wake()

    async def due(self) -> list[datetime]:
        """The loop's fetch: one pass, judged at this instant."""
        return [self._clock()]

    async def poll(self, now: datetime) -> None:
        """One round of engine polls (the poll loop's work; see ``EnginePolls``)."""
        await self.engines.poll(now)

    async def check(self, now: datetime) -> None:
        """Judge every watched node of this instance's shards, then publish them."""
        held = await self._shards.claim() if self._shards else _ALL
        mine = self._in(held)
        nodes = [n for n in await self._nodes.current() if mine(n.id)]
        ids = [n.id for n in nodes]
        beats = await self._heartbeats.every()
        polls = await self._polls.every()
        self.engines.watch(
            {n.id: n.endpoint for n in nodes if n.endpoint and n.status in _POLLED}, polls
        )
        routable: list[_Routable] = []
        for count, node in enumerate(nodes, 1):
            if count % 500 == 0:
                await asyncio.sleep(0)  # heartbeats go on meanwhile: a big pass is long
            record, poll = beats.get(node.id), polls.get(node.id)
            status, verdict = await self._judge(node, record, poll, now)
            if node.endpoint is not None and status in _ROUTED:
                routable.append(_Routable(node, status, poll, verdict))
        await self._publish(routable, mine)
        await self._forget(set(ids), held, mine)

    async def _judge(
        self,
        node: WatchedNode,
        record: HeartbeatRecord | None,
        poll: PollRecord | None,
        now: datetime,
    ) -> tuple[NodeStatus, Verdict | None]:
        """The node's verdict, and its status once the verdict moved it."""
        status = node.status
        if status is NodeStatus.DRAINING:
            return status, None
        silent_for = now.timestamp() - record.at if record else None
        state = record.engine_state if record else None
        failures = poll.failures if poll else 0
        if plainly_healthy(status, silent_for, state, failures, self._policy):
            return status, Verdict.HEALTHY
        facts = NodeFacts(
            status=status,
            last_heartbeat=record.received_at if record else None,
            engine_state=state,
            ready_at=node.ready_at,
            status_since=node.status_since,
            poll_failures=failures,
            poll_successes=poll.successes if poll else 0,
        )
        verdict = judge(facts, now, self._policy)
        target = next_status(status, verdict)
        if target is not None and await self._store.transition(
            node.id, target, f"health: {verdict.value}"
        ):
            log.info("verdict", extra={"node_id": node.id, "status": target.value})
            return target, verdict
        return status, verdict

    def _in(self, held: frozenset[int]) -> Callable[[str], bool]:
        if self._shards is None:
            return lambda node_id: True
        count = self._shards.shards
        return lambda node_id: shard_of(node_id, count) in held

    async def _publish(self, routable: list[_Routable], mine: Callable[[str], bool]) -> None:
        """Make the table's entries of this instance's nodes what they should be, in
        one atomic write, and only when membership or routing facts changed: load
        figures alone do not make a new version (heartbeats and polls keep them fresh
        in place), and gateways re-read the table only on a new version. Entries this
        instance did not write (Redis lost them, another instance wrote them, a node
        went) are found through the table's index."""
        listed = {n: m for n, m in (await self._table.listed()).items() if mine(n)}
        wanted = {r.node.id: (r, r.member()) for r in routable}
        changed = [
            r
            for node_id, (r, member) in wanted.items()
            if listed.get(node_id) != r.node.model or self._written.get(node_id) != member
        ]
        removals = [node_id for node_id in listed if node_id not in wanted]
        if changed or removals:
            loads = await self._heartbeats.loads([r.node.id for r in changed])
            upserts = [r.replica(loads.get(r.node.id, {})) for r in changed]
            await self._table.apply(upserts, removals)
        self._written = {node_id: member for node_id, (_, member) in wanted.items()}

    async def _forget(
        self, watched: set[str], held: frozenset[int], mine: Callable[[str], bool]
    ) -> None:
        """Drop the records of this instance's nodes no longer watched; when its
        shards changed (and on the first pass), sweep every stray of them."""
        if held != self._held:
            await self._heartbeats.sweep(watched, mine)
            await self._polls.sweep(watched, mine)
        elif self._watched is not None:
            await self._heartbeats.drop(self._watched - watched)
            await self._polls.drop(self._watched - watched)
        self._watched, self._held = watched, held


_ROUTED = (NodeStatus.ACTIVE, NodeStatus.DRAINING)
"""Active nodes take traffic; draining ones stay listed, flagged, for in-flight work."""
_POLLED = (NodeStatus.ACTIVE, NodeStatus.UNHEALTHY)
_ALL = frozenset({0})


@dataclass(frozen=True)
class _Routable:
    node: WatchedNode
    status: NodeStatus
    poll: PollRecord | None
    verdict: Verdict | None

    def member(self) -> tuple[object, ...]:
        """What routing depends on besides load figures (the node's row is replaced,
        not changed, when it is read again: equal rows are mostly the same object)."""
        return (self.node, self.status, self.verdict is Verdict.DEGRADED)

    def replica(self, load: Figures) -> Replica:
        n = self.node
        return Replica(
            node_id=n.id,
            deployment_id=n.deployment_id,
            model=n.model,
            endpoint=n.endpoint or "",
            draining=self.status is NodeStatus.DRAINING,
            **load,
            latency_ms=self.poll.latency_ms if self.poll else None,
            degraded=self.verdict is Verdict.DEGRADED,
        )
