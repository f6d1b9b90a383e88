"""Helpers shared by the integration and end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import uvicorn
from cic_common.bus import Bus
from cic_common.events import Envelope, Event, decode, encode
from cic_common.processes import free_port
from cic_node_agent.adapters.engine import EngineProcess
from cic_node_agent.domain.engines import EngineLaunch, engine_command
from nats.js.api import ConsumerConfig, DeliverPolicy

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T]], *, within: float = 60.0, every: float = 0.1
) -> T:
    """The first truthy result of ``check``; fails the test after ``within`` seconds.

    ``within`` is a guard against hanging, not a performance assertion: it is set far
    above what any healthy run needs.
    """
    last: T | None = None
    try:
        async with asyncio.timeout(within):
            while True:
                last = await check()
                if last:
                    return last
                await asyncio.sleep(every)
    except TimeoutError:
        raise AssertionError(f"condition not met within {within} s; last value {last!r}") from None


async def dead_letters(bus: Bus, subject: str) -> list[tuple[bytes, dict[str, str]]]:
    """Everything on ``dlq.<subject>`` so far."""
    sub = await bus.js.subscribe(
        f"dlq.{subject}",
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
    )
    found = []
    try:
        while True:
            msg = await sub.next_msg(timeout=0.5)
            found.append((msg.data, dict(msg.headers or {})))
    except TimeoutError:
        pass
    finally:
        await sub.unsubscribe()
    return found


def envelope_for(event: Event) -> Envelope:
    """The envelope ``event`` would travel in, for calling a handler directly."""
    envelope, _ = decode(encode(event, producer="test")[1], type(event))
    return envelope


async def published(bus: Bus, subjects: str) -> int:
    """How many messages matching ``subjects`` the events stream holds."""
    info = await bus.js.stream_info("CIC_EVENTS", subjects_filter=subjects)
    return sum((info.state.subjects or {}).values())


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI ``app`` over real HTTP on a free port; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="none")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(3000):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        assert server.started, "the test HTTP server did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def sim_engine(
    model: str, *, max_model_len: int = 2048, token_delay: float = 0.0
) -> AsyncIterator[EngineProcess]:
    """A simulator engine serving ``model`` in its own process, ready, until the end."""
    port = free_port()
    launch = EngineLaunch("sim", model, "127.0.0.1", port, max_model_len, token_delay=token_delay)
    process = EngineProcess(engine_command(sys.executable, launch), f"http://127.0.0.1:{port}")
    await process.start()
    try:
        await process.wait_ready(60)
        yield process
    finally:
        await process.close()
