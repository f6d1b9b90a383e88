"""Draining on a preemption notice and on SIGTERM: no in-flight request fails."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import openai
import pytest
from cic_common.bus import Bus
from cic_common.events import TerminationWarning, decode
from cic_common.processes import alive
from cic_local.infra import free_port
from cic_local.metadata_server import MetadataState, create_app
from cic_node_agent.adapters.engine import EngineProcess
from cic_node_agent.adapters.metadata import GcpPreemptionWatcher
from cic_node_agent.domain.engines import EngineLaunch, engine_command
from cic_node_agent.entrypoints.agent import NodeAgent
from cic_node_agent.entrypoints.preemption import PreemptionWatch
from nats.aio.msg import Msg
from support import eventually, serving

TOKENS = 40
"""With 0.05 s per token each request streams for about 2 s."""


@dataclass
class Node:
    agent: NodeAgent
    engine: EngineProcess
    client: openai.AsyncOpenAI
    warnings: list[TerminationWarning]


@pytest.fixture
async def node(bus: Bus) -> AsyncIterator[Node]:
    port = free_port()
    launch = EngineLaunch("sim", "drain-model", "127.0.0.1", port, 4096, token_delay=0.05)
    engine = EngineProcess(engine_command(sys.executable, launch), f"http://127.0.0.1:{port}")
    agent = NodeAgent(
        "ndrain", "drain-model", engine, bus,
        advertise_url=f"http://127.0.0.1:{port}", heartbeat_interval=0.5,
        ready_timeout=60, restart_limit=1, drain_timeout=20,
    )  # fmt: skip
    warnings: list[TerminationWarning] = []

    async def on_warning(msg: Msg) -> None:
        warnings.append(decode(msg.data, TerminationWarning)[1])

    sub = await bus.nc.subscribe("cic.termination-warning.ndrain", cb=on_warning)
    task = asyncio.create_task(agent.run())
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x")
    await eventually(lambda: asyncio.sleep(0, result=agent.state == "ready"))
    yield Node(agent, engine, client, warnings)
    agent.stop()
    await task
    await sub.unsubscribe()
    await client.close()
    await engine.close()


async def stream_to_the_end(client: openai.AsyncOpenAI) -> tuple[int, str | None]:
    """Tokens received and the finish reason of one streamed completion."""
    stream = await client.chat.completions.create(
        model="drain-model",
        messages=[{"role": "user", "content": "long answer please"}],
        max_tokens=TOKENS,
        stream=True,
    )
    received, finish = 0, None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            received += 1
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    return received, finish


async def running(node: Node, count: int) -> bool:
    facts = await node.engine.facts()
    return facts is not None and facts.requests_running == count


async def test_a_notice_with_30_s_left_lets_every_in_flight_request_finish(node: Node) -> None:
    state = MetadataState()
    async with serving(create_app(state)) as url:
        watch = PreemptionWatch(
            GcpPreemptionWatcher(url, wait=30), node.agent.on_notice,
            node.agent.recommend_rebalance, interval=0.1,
        )  # fmt: skip
        watching = asyncio.create_task(watch.run())
        requests = [asyncio.create_task(stream_to_the_end(node.client)) for _ in range(4)]
        await eventually(lambda: running(node, 4))
        before = datetime.now(UTC)
        state.deadline = before + timedelta(seconds=30)
        state.notify()
        await eventually(lambda: asyncio.sleep(0, result=node.agent.deadline is not None))
        # Warned, yet the engine keeps serving what it holds: nothing is cut.
        assert await running(node, 4)
        assert await node.engine.healthy()

        results = await asyncio.gather(*requests)
        watch.stop()
        await watching

    assert results == [(TOKENS, "length")] * 4
    await eventually(lambda: asyncio.sleep(0, result=node.warnings))
    warning = node.warnings[0]
    assert warning.source == "gcp-preempted"
    assert warning.deadline >= before + timedelta(seconds=29)
    assert node.agent.deadline == warning.deadline
    engine_pid = node.engine.pid
    assert engine_pid is not None
    await eventually(lambda: asyncio.sleep(0, result=not alive(engine_pid)))
    assert node.agent.state == "stopping"
    assert node.agent.restarts == 0


async def test_sigterm_drains_in_flight_requests_before_the_engine_stops(node: Node) -> None:
    requests = [asyncio.create_task(stream_to_the_end(node.client)) for _ in range(3)]
    await eventually(lambda: running(node, 3))
    node.agent.stop()
    await asyncio.sleep(0.5)
    assert await node.engine.healthy()  # draining, not stopped: the requests are still on
    results = await asyncio.gather(*requests)
    assert results == [(TOKENS, "length")] * 3
    assert node.warnings == []
