"""The node agent with a real simulator engine on real NATS: it announces the node,
heartbeats, restarts a crashed engine, and leaves nothing running when stopped."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import httpx
from cic_common.bus import Bus
from cic_common.events import Heartbeat, NodeReady, decode
from cic_common.processes import alive
from cic_local.infra import free_port
from cic_node_agent.adapters.engine import EngineProcess
from cic_node_agent.domain.engines import EngineLaunch, engine_command
from cic_node_agent.entrypoints.agent import NodeAgent
from nats.aio.msg import Msg
from support import eventually


async def test_agent_announces_heartbeats_restarts_and_stops_cleanly(bus: Bus) -> None:
    port = free_port()
    launch = EngineLaunch("sim", "agent-model", "127.0.0.1", port, 2048)
    engine = EngineProcess(engine_command(sys.executable, launch), f"http://127.0.0.1:{port}")
    agent = NodeAgent(
        "nagent",
        "agent-model",
        engine,
        bus,
        advertise_url=f"http://127.0.0.1:{port}",
        heartbeat_interval=0.2,
        ready_timeout=60,
        restart_limit=3,
    )
    ready: list[NodeReady] = []
    beats: list[Heartbeat] = []

    async def on_ready(msg: Msg) -> None:
        ready.append(decode(msg.data, NodeReady)[1])

    async def on_beat(msg: Msg) -> None:
        beats.append(decode(msg.data, Heartbeat)[1])

    subs = [
        await bus.nc.subscribe("cic.node-ready.nagent", cb=on_ready),
        await bus.nc.subscribe("cic.heartbeat.nagent", cb=on_beat),
    ]
    task = asyncio.create_task(agent.run())
    try:
        await eventually(lambda: asyncio.sleep(0, result=ready))
        assert ready[0].endpoint == f"http://127.0.0.1:{port}"
        assert ready[0].model == "agent-model"
        await eventually(lambda: asyncio.sleep(0, result=[b for b in beats if b.seq > 2]))
        assert beats[-1].engine_state == "ready"

        # Requests the engine finishes show up as a rate and a p95 in the heartbeats.
        async with httpx.AsyncClient(base_url=ready[0].endpoint) as client:
            body = {"model": "agent-model", "prompt": "hi", "max_tokens": 4}
            for _ in range(6):
                answer = await client.post("/v1/completions", json=body)
                assert answer.status_code == 200
        busy = await eventually(
            lambda: asyncio.sleep(0, result=[b for b in beats if b.requests_per_second > 0])
        )
        assert busy[0].latency_p95 is not None
        assert busy[0].latency_p95 > 0

        first_engine = engine.pid
        assert first_engine is not None
        os.kill(first_engine, signal.SIGKILL)
        await eventually(lambda: asyncio.sleep(0, result=len(ready) == 2))
        assert agent.restarts == 1
        assert engine.pid != first_engine
        assert [b.engine_state for b in beats if b.engine_state != "ready"] != []
    finally:
        agent.stop()
        await task
        for sub in subs:
            await sub.unsubscribe()
    last_engine = engine.pid
    assert last_engine is not None
    assert not alive(last_engine)
    await engine.close()


async def test_an_engine_that_keeps_crashing_is_reported_failed_not_hidden(bus: Bus) -> None:
    engine = EngineProcess([sys.executable, "-c", "raise SystemExit(3)"], "http://127.0.0.1:9")
    agent = NodeAgent(
        "ncrashy", "m", engine, bus,
        advertise_url="http://127.0.0.1:9", heartbeat_interval=0.2,
        ready_timeout=30, restart_limit=1,
    )  # fmt: skip
    beats: list[Heartbeat] = []

    async def on_beat(msg: Msg) -> None:
        beats.append(decode(msg.data, Heartbeat)[1])

    sub = await bus.nc.subscribe("cic.heartbeat.ncrashy", cb=on_beat)
    task = asyncio.create_task(agent.run())
    try:
        await eventually(lambda: asyncio.sleep(0, result=agent.state == "failed"))
        await eventually(
            lambda: asyncio.sleep(0, result=any(b.engine_state == "failed" for b in beats))
        )
    finally:
        agent.stop()
        await task
        await sub.unsubscribe()
    assert agent.restarts == 2
    assert engine.returncode == 3
