"""The scheduler on real PostgreSQL: launches once per missing replica, even when
several instances reconcile at the same moment; drains on warning and on delete."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import asyncpg
import pytest
from cic_common.db import create_pool, migrate
from cic_common.events import (
    Event,
    LaunchRequested,
    NodeDraining,
    TerminateRequested,
    TerminationWarning,
)
from cic_common.nodes import NodeRepository
from cic_scheduler.adapters.store import SchedulerStore
from cic_scheduler.entrypoints.handlers import Scheduler
from support import envelope_for

E = TypeVar("E", bound=Event)


class RecordingBus:
    def __init__(self) -> None:
        self.sent: list[tuple[Event, str | None]] = []

    async def publish(self, event: Event, *, msg_id: str | None = None) -> str:
        self.sent.append((event, msg_id))
        return "id"

    def of(self, kind: type[E]) -> list[E]:
        return [e for e, _ in self.sent if isinstance(e, kind)]


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database, max_size=8)
    await migrate(pool)
    yield pool
    await pool.close()


async def deployment(pool: asyncpg.Pool, dep_id: str, replicas: int) -> None:
    await pool.execute(
        "INSERT INTO deployments (id, name, model, replicas) VALUES ($1, $1, 'smodel', $2)",
        dep_id,
        replicas,
    )


def scheduler(pool: asyncpg.Pool, bus: RecordingBus) -> Scheduler:
    return Scheduler(SchedulerStore(pool), NodeRepository(pool), bus, resend_after=30)


async def test_missing_replicas_are_launched_once_each(pool: asyncpg.Pool) -> None:
    await deployment(pool, "dsched1", 3)
    bus = RecordingBus()
    await scheduler(pool, bus).reconcile("dsched1")
    await scheduler(pool, bus).reconcile("dsched1")
    launches = bus.of(LaunchRequested)
    assert len(launches) == 3
    assert {m for _, m in bus.sent} == {f"launch:{e.node_id}" for e in launches}
    rows = await pool.fetch("SELECT status FROM nodes WHERE deployment_id = 'dsched1'")
    assert [r["status"] for r in rows] == ["requested"] * 3


async def test_instances_reconciling_together_never_launch_twice(pool: asyncpg.Pool) -> None:
    await deployment(pool, "dsched2", 2)
    buses = [RecordingBus() for _ in range(4)]
    await asyncio.gather(*(scheduler(pool, b).reconcile("dsched2") for b in buses))
    await asyncio.gather(*(scheduler(pool, b).reconcile("dsched2") for b in buses))
    assert sum(len(b.of(LaunchRequested)) for b in buses) == 2
    count = await pool.fetchval("SELECT count(*) FROM nodes WHERE deployment_id = 'dsched2'")
    assert count == 2


async def test_a_warned_node_is_drained_and_replaced_at_once(pool: asyncpg.Pool) -> None:
    await deployment(pool, "dsched3", 1)
    bus = RecordingBus()
    sched = scheduler(pool, bus)
    await sched.reconcile("dsched3")
    (first,) = bus.of(LaunchRequested)
    node_id = first.node_id
    await pool.execute("UPDATE nodes SET status = 'active' WHERE id = $1", node_id)

    deadline = datetime.now(UTC) + timedelta(minutes=2)
    warning = TerminationWarning(node_id=node_id, deadline=deadline, source="aws-imds")
    await sched.on_termination_warning(warning, envelope_for(warning))
    await sched.on_termination_warning(warning, envelope_for(warning))  # redelivered

    assert await pool.fetchval("SELECT status FROM nodes WHERE id = $1", node_id) == "draining"
    assert len(bus.of(NodeDraining)) == 1
    assert len(bus.of(LaunchRequested)) == 2
    live = await pool.fetchval(
        "SELECT count(*) FROM nodes WHERE deployment_id = 'dsched3' AND status = 'requested'"
    )
    assert live == 1


async def test_a_deleted_deployment_has_every_node_terminated(pool: asyncpg.Pool) -> None:
    await deployment(pool, "dsched4", 2)
    bus = RecordingBus()
    sched = scheduler(pool, bus)
    await sched.reconcile("dsched4")
    await pool.execute("UPDATE deployments SET deleted_at = now() WHERE id = 'dsched4'")
    await sched.reconcile("dsched4")
    terminated = {e.node_id for e in bus.of(TerminateRequested)}
    launched = {e.node_id for e in bus.of(LaunchRequested)}
    assert terminated == launched
    assert len(launched) == 2
    statuses = await pool.fetch("SELECT status FROM nodes WHERE deployment_id = 'dsched4'")
    assert {r["status"] for r in statuses} == {"draining"}


class DyingBus(RecordingBus):
    """A scheduler killed right after its transaction committed: nothing gets out."""

    async def publish(self, event: Event, *, msg_id: str | None = None) -> str:
        raise ConnectionError("the process died here")


async def test_a_scheduler_killed_after_deciding_loses_nothing(pool: asyncpg.Pool) -> None:
    await deployment(pool, "dsched5", 2)
    with pytest.raises(ConnectionError):
        await Scheduler(SchedulerStore(pool), NodeRepository(pool), DyingBus(), 30).reconcile(
            "dsched5"
        )
    recorded = {
        r["id"] for r in await pool.fetch("SELECT id FROM nodes WHERE deployment_id = 'dsched5'")
    }
    assert len(recorded) == 2
    # Another instance takes over; once the resend delay has passed it sends the very
    # same commands (same node ids, same message ids), and launches nothing new.
    survivor_bus = RecordingBus()
    survivor = Scheduler(SchedulerStore(pool), NodeRepository(pool), survivor_bus, 0)
    await survivor.reconcile("dsched5")
    resent = survivor_bus.of(LaunchRequested)
    assert {e.node_id for e in resent} == recorded
    assert {m for _, m in survivor_bus.sent} == {f"launch:{n}" for n in recorded}
    count = await pool.fetchval("SELECT count(*) FROM nodes WHERE deployment_id = 'dsched5'")
    assert count == 2
