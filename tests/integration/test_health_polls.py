"""The pull half of double safety against a real engine: one that hangs while its agent
keeps heartbeating is caught by health's own polls, and routed to again once it answers."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
from cic_common.db import create_pool, migrate
from cic_common.events import Heartbeat, NodeReady, ReplicaSuspected
from cic_common.loops import Loop
from cic_common.replicas import ReplicaTable
from cic_common.scripts import close_scripts
from cic_health.adapters.poller import EnginePoller, PollStore
from cic_health.adapters.store import HealthStore, HeartbeatStore
from cic_health.domain.verdicts import HealthPolicy
from cic_health.entrypoints.monitor import HealthMonitor
from cic_local.infra import free_port
from cic_node_agent.adapters.engine import EngineProcess
from cic_node_agent.domain.engines import EngineLaunch, engine_command
from conftest import Servers
from redis.asyncio import Redis
from support import envelope_for, eventually, sim_engine


async def prepared(
    database: str, servers: Servers, deployment: str, model: str, replicas: int
) -> tuple[asyncpg.Pool, Redis]:
    """A migrated pool with ``deployment`` serving ``model``, and an emptied test Redis."""
    pool = await create_pool(database)
    await migrate(pool)
    redis = Redis.from_url(servers.redis_url)
    await redis.flushdb()
    await pool.execute(
        "INSERT INTO deployments (id, name, model, replicas) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT DO NOTHING", deployment, deployment[1:], model, replicas,
    )  # fmt: skip
    return pool, redis


async def test_a_hung_engine_is_caught_by_polls_while_its_agent_still_beats(
    database: str, servers: Servers
) -> None:
    port = free_port()
    launch = EngineLaunch("sim", "pmodel", "127.0.0.1", port, 2048)
    engine = EngineProcess(engine_command(sys.executable, launch), f"http://127.0.0.1:{port}")
    pool, redis = await prepared(database, servers, "dpoll", "pmodel", 1)
    poller = EnginePoller(timeout=0.5)
    await pool.execute(
        "INSERT INTO nodes (id, deployment_id, generation, status, spec, backend)"
        " VALUES ('npoll', 'dpoll', 1, 'initializing', $1, 'local')",
        {"model": "pmodel"},
    )
    store = HealthStore(pool)
    table = ReplicaTable(redis)
    monitor = HealthMonitor(
        store, HeartbeatStore(redis), table, HealthPolicy(), poller=poller,
        poll_interval=timedelta(0),
    )  # fmt: skip

    async def status() -> str:
        value: str = await pool.fetchval("SELECT status FROM nodes WHERE id = 'npoll'")
        return value

    async def beat_and_check() -> None:
        heartbeat = Heartbeat(node_id="npoll")  # the agent is fine and says so
        await monitor.on_heartbeat(heartbeat, envelope_for(heartbeat))
        for due in await monitor.engines.due():
            await monitor.poll(due)
        for due in await monitor.due():
            await monitor.check(due)

    await engine.start()
    try:
        await engine.wait_ready(60)
        ready = NodeReady(node_id="npoll", endpoint=engine.base_url, model="pmodel")
        await monitor.on_node_ready(ready, envelope_for(ready))
        await beat_and_check()  # listed, and its engine handed to the polls
        await beat_and_check()
        assert await status() == "active"
        (replica,) = await table.replicas("pmodel")
        assert replica.latency_ms is not None

        assert engine.pid is not None
        os.kill(engine.pid, signal.SIGSTOP)  # hung: the port accepts, nothing answers
        await beat_and_check()
        await beat_and_check()
        assert await status() == "active"  # two failed polls are a blip
        await beat_and_check()
        assert await status() == "unhealthy"
        assert await table.replicas("pmodel") == []

        os.kill(engine.pid, signal.SIGCONT)
        await beat_and_check()
        assert await status() == "unhealthy"  # one good poll is not enough
        await beat_and_check()
        assert await status() == "active"
        assert [r.node_id for r in await table.replicas("pmodel")] == ["npoll"]
    finally:
        if engine.pid is not None:
            os.kill(engine.pid, signal.SIGCONT)
        await engine.close()
        await poller.close()
        await redis.aclose()
        await pool.close()


async def test_a_hung_engine_stays_out_when_redis_loses_its_poll_streak(
    database: str, servers: Servers
) -> None:
    """Health's two loops as it runs them, a SIGSTOPped engine and its agent beating on
    ("ready"): once the node is unhealthy, Redis loses the engine's failed polls (a
    flush). Heartbeats alone do not bring the node back: over several more poll
    intervals no verdict pass finds it active, and its polls fail again from zero."""
    policy = HealthPolicy()
    pool, redis = await prepared(database, servers, "dlost", "lmodel", 1)
    await pool.execute(
        "INSERT INTO nodes (id, deployment_id, generation, status, spec, backend)"
        " VALUES ('nlost', 'dlost', 1, 'initializing', $1, 'local')", {"model": "lmodel"},
    )  # fmt: skip
    polls = PollStore(redis)
    monitor = HealthMonitor(
        HealthStore(pool), HeartbeatStore(redis), ReplicaTable(redis), policy,
        poller=EnginePoller(timeout=0.2), polls=polls, poll_interval=timedelta(seconds=0.5),
        poll_tick=timedelta(seconds=0.05),
    )  # fmt: skip
    seen: list[str] = []
    """The node's status after each verdict pass."""

    async def check_and_look(now: datetime) -> None:
        await monitor.check(now)
        seen.append(await pool.fetchval("SELECT status FROM nodes WHERE id = 'nlost'"))

    check = Loop("health-check", monitor.due, check_and_look, interval=0.02)
    poll = Loop("health-poll", monitor.engines.due, monitor.poll, interval=0.05)
    monitor.set_wake(check.wake)

    async def agent() -> None:
        while True:
            beat = Heartbeat(node_id="nlost")  # "ready", as the real agent keeps saying
            await monitor.on_heartbeat(beat, envelope_for(beat))
            await asyncio.sleep(0.02)

    async def failures() -> int:
        record = (await polls.every()).get("nlost")
        return record.failures if record else 0

    def status_is(status: str) -> Callable[[], Awaitable[bool]]:
        async def is_it() -> bool:
            return seen[-1:] == [status]

        return is_it

    async with sim_engine("lmodel") as engine:
        assert engine.pid is not None
        loops = [asyncio.create_task(work()) for work in (check.run, poll.run, agent)]
        try:
            ready = NodeReady(node_id="nlost", endpoint=engine.base_url, model="lmodel")
            await monitor.on_node_ready(ready, envelope_for(ready))
            await eventually(status_is("active"))
            os.kill(engine.pid, signal.SIGSTOP)  # hung: the port accepts, nothing answers
            await eventually(status_is("unhealthy"))
            # Flush just after a failed poll is counted: the next is an interval away,
            # so passes with beats and no streak come first.
            last = await failures()

            async def one_more_failure() -> bool:
                return await failures() > last

            await eventually(one_more_failure, every=0.005)
            await redis.flushdb()
            after = len(seen)

            async def failing_again() -> bool:
                return await failures() >= 2 * policy.poll_failures_to_fail

            await eventually(failing_again)  # several poll intervals, every poll failed
            observed = seen[after:]
        finally:
            check.stop()
            poll.stop()
            os.kill(engine.pid, signal.SIGCONT)
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await pool.execute("DELETE FROM nodes WHERE deployment_id = 'dlost'")
            await redis.aclose()
            await pool.close()
    assert len(observed) > 2 * policy.poll_failures_to_fail  # many passes meanwhile
    assert observed.count("active") == 0, observed
    assert set(observed) == {"unhealthy"}


async def test_a_suspected_replica_is_polled_at_once_and_only_a_failing_one_leaves(
    database: str, servers: Servers
) -> None:
    """A gateway's report has health poll the engine now, not at its turn: one whose
    polls fail is out of the table at the next pass; one that answers stays."""

    async def answer_health(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    live = await asyncio.start_server(answer_health, "127.0.0.1", 0)
    endpoints = {
        "nlive": f"http://127.0.0.1:{live.sockets[0].getsockname()[1]}",
        "ngone": f"http://127.0.0.1:{free_port()}",  # nothing listens: refused at once
    }
    pool, redis = await prepared(database, servers, "dsus", "smodel", 2)
    table = ReplicaTable(redis)
    monitor = HealthMonitor(
        HealthStore(pool), HeartbeatStore(redis), table, HealthPolicy(),
        poller=EnginePoller(timeout=0.5), poll_interval=timedelta(hours=1), hurry_spacing=0.05,
    )  # fmt: skip
    try:
        for node, endpoint in endpoints.items():
            await pool.execute(
                "INSERT INTO nodes (id, deployment_id, generation, status, spec, backend)"
                " VALUES ($1, 'dsus', 1, 'initializing', $2, 'local')", node, {"model": "smodel"},
            )  # fmt: skip
            ready = NodeReady(node_id=node, endpoint=endpoint, model="smodel")
            await monitor.on_node_ready(ready, envelope_for(ready))
            beat = Heartbeat(node_id=node)
            await monitor.on_heartbeat(beat, envelope_for(beat))
        await monitor.check(datetime.now(UTC))
        assert sorted(r.node_id for r in await table.replicas("smodel")) == ["ngone", "nlive"]

        for node in ("nlive", "ngone", "nunknown"):
            report = ReplicaSuspected(node_id=node, gateway="gw-1", reason="reset")
            await monitor.on_replica_suspected(report, envelope_for(report))
        polls = await PollStore(redis).every()
        assert (polls["nlive"].failures, polls["nlive"].successes) == (0, 1)  # one poll
        assert polls["ngone"].failures == HealthPolicy().poll_failures_to_fail

        await monitor.check(datetime.now(UTC))  # an hour before any paced poll
        assert [r.node_id for r in await table.replicas("smodel")] == ["nlive"]
        statuses = dict(
            await pool.fetch("SELECT id, status FROM nodes WHERE deployment_id = 'dsus'")
        )
        assert statuses == {"nlive": "active", "ngone": "unhealthy"}
    finally:
        live.close()
        await pool.execute("DELETE FROM nodes WHERE deployment_id = 'dsus'")  # shared database
        await redis.aclose()
        await pool.close()


async def test_poll_streaks_are_counted_atomically_from_any_number_of_pollers(
    servers: Servers,
) -> None:
    """Twenty failed polls of one engine recorded at once, by two instances' stores (a
    paced round and a suspicion's polls, say): twenty failures, none lost."""
    redis = Redis.from_url(servers.redis_url)
    try:
        await redis.flushdb()
        stores, now = [PollStore(redis), PollStore(redis)], datetime.now(UTC)
        await asyncio.gather(*(stores[i % 2].record({"natom": (False, 0.5)}, now)
                               for i in range(20)))  # fmt: skip
        (record,) = (await stores[0].every()).values()
        assert (record.failures, record.successes, record.latency_ms) == (20, 0, None)
        assert record.at == now.timestamp()
        await stores[0].record({"natom": (True, 0.010)}, now)
        fresh = await stores[1].record({"natom": (True, 0.020)}, now)
        assert fresh["natom"].successes == 2
        assert fresh["natom"].failures == 0
        assert fresh["natom"].latency_ms is not None
        assert abs(fresh["natom"].latency_ms - 12.0) < 1e-9  # 0.8 x 10 ms + 0.2 x 20 ms
    finally:
        await close_scripts(redis)
        await redis.aclose()
