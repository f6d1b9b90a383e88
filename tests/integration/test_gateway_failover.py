"""Failover and resumption through a served gateway, on three real simulator engines
that are killed (SIGKILL) or hung (SIGSTOP) mid-request, with the official ``openai``
client: no non-streamed request fails, and a cut stream goes on, one stream to its
client, with the text, id and usage of the stream that was not cut."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import nats
import openai
import pytest
import uvicorn
from cic_common.events import ReplicaSuspected, decode
from cic_common.processes import free_port
from cic_common.replicas import Replica, ReplicaTable
from cic_gateway.bootstrap import create_app
from cic_gateway.domain.keys import generate_key
from cic_gateway.serving import GatewayHttpProtocol
from cic_gateway.settings import GatewaySettings
from cic_node_agent.adapters.engine import EngineProcess
from cic_node_agent.domain.engines import EngineLaunch, engine_command
from conftest import Servers
from nats.aio.msg import Msg
from redis.asyncio import Redis
from support import eventually

MODEL = "failover-model"
PROMPT = "tell me how spot capacity comes and goes"


@dataclass
class Fleet:
    engines: dict[str, EngineProcess]
    client: openai.AsyncOpenAI
    admin: httpx.AsyncClient
    key_id: str
    gateway: str

    def kill(self, node: str) -> None:
        os.kill(self._pid(node), signal.SIGKILL)

    def hang(self, node: str) -> None:
        os.kill(self._pid(node), signal.SIGSTOP)

    def _pid(self, node: str) -> int:
        pid = self.engines[node].pid
        assert pid is not None
        return pid

    async def usage(self, requests: int) -> dict[str, object] | None:
        answer = await self.admin.get("/admin/usage", params={"key_id": self.key_id})
        rows = answer.json()["data"]
        return rows[0] if len(rows) == 1 and rows[0]["requests"] == requests else None


@pytest.fixture
async def fleet(servers: Servers, database: str) -> AsyncIterator[Fleet]:
    engines: dict[str, EngineProcess] = {}
    for node in ("n1", "n2", "n3"):
        port = free_port()
        launch = EngineLaunch("sim", MODEL, "127.0.0.1", port, 4096, token_delay=0.02)
        engines[node] = EngineProcess(engine_command(sys.executable, launch),
                                      f"http://127.0.0.1:{port}")  # fmt: skip
        await engines[node].start()
    redis = Redis.from_url(servers.redis_url)
    await redis.flushdb()
    admin_key, _ = generate_key()
    port = free_port()
    settings = GatewaySettings(
        nats_url=servers.nats_url, postgres_dsn=database, redis_url=servers.redis_url,
        admin_key=admin_key, port=port, probe_after=0.5, probe_timeout=0.5, table_refresh=30,
    )  # fmt: skip
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning", ws="none",
                                           http=GatewayHttpProtocol))  # as served  # fmt: skip
    serving = asyncio.create_task(server.serve())
    try:
        for engine in engines.values():
            await engine.wait_ready(60)
        await ReplicaTable(redis).apply([
            Replica(node_id=n, deployment_id="dfail", model=MODEL, endpoint=e.base_url)
            for n, e in engines.items()
        ], [])  # fmt: skip
        await eventually(lambda: _started(server))
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {admin_key}"}
        async with httpx.AsyncClient(base_url=base, headers=headers) as admin:
            await eventually(lambda: _routes(app.state.replicas.replicas(MODEL), 3))
            created = (await admin.post("/admin/keys", json={"name": "chaos"})).json()
            client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=created["key"],
                                        max_retries=0)  # fmt: skip
            yield Fleet(engines, client, admin, created["id"], settings.instance_id)
            await client.close()
    finally:
        for engine in engines.values():
            if engine.pid is not None:
                for sig in (signal.SIGCONT, signal.SIGKILL):
                    try:
                        os.kill(engine.pid, sig)
                    except ProcessLookupError:
                        break
            await engine.close()
        server.should_exit = True
        await serving
        await redis.aclose()


async def _started(server: uvicorn.Server) -> bool:
    return server.started


async def _routes(replicas: list[Replica], count: int) -> bool:
    return len(replicas) == count


async def uncut(fleet: Fleet, healthy: str, chat: bool, max_tokens: int) -> tuple[str, int, int]:
    """The text and usage (prompt, completion) of the same request on a healthy engine."""
    async with httpx.AsyncClient(base_url=fleet.engines[healthy].base_url) as direct:
        if chat:
            body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}],
                    "max_tokens": max_tokens}  # fmt: skip
            answer = (await direct.post("/v1/chat/completions", json=body)).json()
            text = answer["choices"][0]["message"]["content"]
        else:
            body = {"model": MODEL, "prompt": PROMPT, "max_tokens": max_tokens}
            answer = (await direct.post("/v1/completions", json=body)).json()
            text = answer["choices"][0]["text"]
    return text, answer["usage"]["prompt_tokens"], answer["usage"]["completion_tokens"]


@pytest.mark.parametrize(("chat", "fault"), [(False, "kill"), (True, "kill"), (True, "hang")])
async def test_a_stream_cut_by_a_dying_or_hung_replica_goes_on_from_another(
    fleet: Fleet, chat: bool, fault: str
) -> None:
    usage_asked: Any = {"include_usage": True}
    stream: Any
    if chat:
        stream = await fleet.client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": PROMPT}], max_tokens=40,
            stream=True, stream_options=usage_asked,
        )  # fmt: skip
    else:
        stream = await fleet.client.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=40, stream=True, stream_options=usage_asked
        )
    first = stream.response.headers["x-cic-replica"]
    texts, ids, usage, roles = [], set(), None, 0
    async for chunk in stream:
        ids.add(chunk.id)
        for choice in chunk.choices:
            piece = choice.delta.content if chat else choice.text
            roles += bool(chat and choice.delta.role)
            texts.append(piece or "")
        if chunk.usage is not None:
            usage = chunk.usage
        if sum(1 for t in texts if t) == 10:
            fleet.kill(first) if fault == "kill" else fleet.hang(first)

    healthy = next(node for node in fleet.engines if node != first)
    text, prompt_tokens, completion_tokens = await uncut(fleet, healthy, chat, 40)
    assert "".join(texts) == text  # the whole answer, nothing repeated or lost
    assert len(ids) == 1  # one stream, one id
    assert roles == (1 if chat else 0)
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (prompt_tokens, completion_tokens)
    metered = await eventually(lambda: fleet.usage(requests=1))
    assert metered is not None
    assert (metered["prompt_tokens"], metered["completion_tokens"]) == (
        prompt_tokens, completion_tokens,
    )  # fmt: skip


@pytest.mark.parametrize("choices", [1, 2])
async def test_a_stream_left_early_or_cut_for_good_is_metered_for_what_it_had(
    fleet: Fleet, choices: int
) -> None:
    """One stream its client leaves after five tokens; one of two choices (not resumed)
    whose replica dies after five: each is metered for its prompt and what was sent,
    from the engine's running usage, though no final usage ever came."""
    stream = await fleet.client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=200, stream=True, n=choices
    )
    node = stream.response.headers["x-cic-replica"]
    pieces = 0
    async for chunk in stream:
        assert chunk.usage is None  # the client did not ask: none of the gateway's shows
        pieces += sum(1 for c in chunk.choices if c.text)
        if pieces >= 5:
            if choices == 1:
                break
            fleet.kill(node)
    await stream.close()
    _, prompt_tokens, _ = await uncut(fleet, next(n for n in fleet.engines if n != node),
                                      False, 1)  # fmt: skip
    metered = await eventually(lambda: fleet.usage(requests=1))
    assert metered is not None
    assert metered["prompt_tokens"] == prompt_tokens
    completion = metered["completion_tokens"]
    assert isinstance(completion, int)
    assert pieces <= completion < 200 * choices  # what was sent, not all it might have been


async def test_no_request_fails_when_one_replica_is_killed_and_another_hangs(
    fleet: Fleet, servers: Servers
) -> None:
    """And both are reported to health, once each however many requests they failed."""
    nc = await nats.connect(servers.nats_url)
    reports: list[ReplicaSuspected] = []

    async def heard(msg: Msg) -> None:
        reports.append(decode(msg.data, ReplicaSuspected)[1])

    await nc.subscribe(f"cic.{ReplicaSuspected.TYPE}.>", cb=heard)

    async def ask(i: int) -> str:
        answer = await fleet.client.completions.create(model=MODEL, prompt=f"{PROMPT} {i}",
                                                       max_tokens=20)  # fmt: skip
        return answer.choices[0].text

    wave = [asyncio.create_task(ask(i)) for i in range(30)]
    await asyncio.sleep(0)  # sent, and being answered, while the faults strike
    fleet.kill("n1")
    fleet.hang("n2")
    wave += [asyncio.create_task(ask(i)) for i in range(30, 60)]
    answers = await asyncio.gather(*wave)
    assert all(answer.strip() for answer in answers)  # none failed, none empty
    assert len(answers) == 60
    await eventually(lambda: _reported(reports, {"n1", "n2"}))
    await nc.close()
    assert sorted(r.node_id for r in reports) == ["n1", "n2"]
    assert {r.gateway for r in reports} == {fleet.gateway}


async def _reported(reports: list[ReplicaSuspected], nodes: set[str]) -> bool:
    return {r.node_id for r in reports} >= nodes


async def test_a_replica_answering_500_is_passed_over_and_no_request_fails(fleet: Fleet) -> None:
    async with httpx.AsyncClient(base_url=fleet.engines["n1"].base_url) as n1:
        assert (await n1.post("/sim/faults", json={"error_rate": 1.0})).status_code == 200
    served = set()
    for i in range(12):
        raw = await fleet.client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": f"{PROMPT} {i}"}], max_tokens=3
        )
        assert raw.parse().choices[0].message.content
        served.add(raw.headers["x-cic-replica"])
    assert "n1" not in served
    assert served <= {"n2", "n3"}
