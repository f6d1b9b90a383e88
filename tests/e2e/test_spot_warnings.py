"""Preemption warnings on the running platform: the warned node leaves the routing and
its replacement is requested at once, and steady traffic sees no failure.

The reaction times are printed (``-s``) and recorded in docs/benchmarks.md; the test
asserts what must hold whatever the machine's speed.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial

import asyncpg
import openai
import pytest
from cic_common.bus import Bus
from cic_common.events import LaunchRequested, TerminationWarning, decode
from cic_common.replicas import ReplicaTable
from conftest import Running, Servers
from nats.aio.msg import Msg
from redis.asyncio import Redis
from support import eventually

pytestmark = pytest.mark.e2e

MODEL = "spot-model"
WARNINGS = 20


class Load:
    """Non-streamed completions one after another, with no client retries."""

    def __init__(self, client: openai.AsyncOpenAI) -> None:
        self._client = client
        self.sent = 0
        self.failed: list[str] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            self.sent += 1
            try:
                await self._client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4
                )
            except openai.OpenAIError as exc:
                self.failed.append(f"{type(exc).__name__}: {exc}")

    def stop(self) -> None:
        self._stop.set()


async def test_warned_nodes_leave_routing_and_are_replaced_with_no_failed_request(
    running: Running, bus: Bus, servers: Servers
) -> None:
    admin = running.admin
    created = await admin.post("/admin/deployments", json={"model": MODEL, "replicas": 2})
    deployment = created.json()["id"]
    redis = Redis.from_url(servers.redis_url)
    table = ReplicaTable(redis)

    async def routable() -> list[str]:
        return sorted(r.node_id for r in await table.replicas(MODEL) if not r.draining)

    await eventually(lambda: _count(routable, 2), within=120)

    launches: dict[str, float] = {}

    async def on_launch(msg: Msg) -> None:
        launches[decode(msg.data, LaunchRequested)[1].node_id] = time.monotonic()

    sub = await bus.nc.subscribe("cic.launch-requested.>", cb=on_launch)
    key = (await admin.post("/admin/keys", json={"name": "load"})).json()["key"]
    client = openai.AsyncOpenAI(base_url=f"{running.base_url}/v1", api_key=key, max_retries=0)
    load = Load(client)
    load_task = asyncio.create_task(load.run())
    out_of_routing: list[float] = []
    replacement: list[float] = []
    try:
        for _ in range(WARNINGS):
            victim = (await routable())[0]
            secret = await _node_secret(running, victim)
            known = set(launches)
            node_bus = await Bus.connect(servers.nats_url, producer="test-node", declare=False,
                                         signing_secret=secret)  # fmt: skip
            warning = TerminationWarning(
                node_id=victim, source="test", deadline=datetime.now(UTC) + timedelta(minutes=2)
            )
            sent = time.monotonic()
            await node_bus.publish(warning)
            await node_bus.close()
            await eventually(partial(_absent, routable, victim), every=0.01)
            out_of_routing.append(time.monotonic() - sent)
            await eventually(partial(_new_launch, launches, known), every=0.01)
            new = (set(launches) - known).pop()
            replacement.append(launches[new] - sent)
            await eventually(lambda: _count(routable, 2), within=120)
    finally:
        load.stop()
        await load_task
        await sub.unsubscribe()
        await client.close()
        await redis.aclose()
    nodes = (await admin.get("/admin/nodes", params={"deployment_id": deployment})).json()
    print(_figures(out_of_routing, replacement, load.sent))
    assert load.failed == []
    assert load.sent > WARNINGS
    assert len(out_of_routing) == len(replacement) == WARNINGS
    statuses = [n["status"] for n in nodes["data"]]
    assert statuses.count("active") == 2
    assert statuses.count("terminated") >= WARNINGS - 1


Routable = Callable[[], Awaitable[list[str]]]


async def _count(routable: Routable, wanted: int) -> bool:
    return len(await routable()) == wanted


async def _absent(routable: Routable, node_id: str) -> bool:
    return node_id not in await routable()


async def _new_launch(launches: dict[str, float], known: set[str]) -> bool:
    return bool(set(launches) - known)


async def _node_secret(running: Running, node_id: str) -> str:
    """The node's own signing secret, as its agent holds it (read where it is stored)."""
    conn = await asyncpg.connect(running.database)
    try:
        secret: str = await conn.fetchval("SELECT secret FROM nodes WHERE id = $1", node_id)
    finally:
        await conn.close()
    return secret


def _figures(out_of_routing: list[float], replacement: list[float], sent: int) -> str:
    def p99(values: list[float]) -> float:
        return sorted(values)[max(0, int(len(values) * 0.99) - 1)] if values else 0.0

    return (
        f"\n{len(out_of_routing)} warnings, {sent} requests:"
        f" out of routing p50 {statistics.median(out_of_routing) * 1000:.0f} ms,"
        f" p99 {p99(out_of_routing) * 1000:.0f} ms;"
        f" replacement requested p50 {statistics.median(replacement) * 1000:.0f} ms,"
        f" p99 {p99(replacement) * 1000:.0f} ms"
    )
