"""Routing through the gateway to a real simulator engine, with the official ``openai``
client: the gateway follows the replica table as health changes it, sends no request
to a replica that just failed, and serves embeddings too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import openai
import pytest
from cic_common.processes import free_port
from cic_common.replicas import Replica, ReplicaTable
from cic_gateway.bootstrap import create_app
from cic_gateway.domain.keys import generate_key
from cic_gateway.settings import GatewaySettings
from conftest import Servers
from fastapi import FastAPI
from openai.types.chat import ChatCompletionMessageParam
from redis.asyncio import Redis
from support import eventually, sim_engine

MODEL = "route-model"


@dataclass
class Routed:
    app: FastAPI
    client: openai.AsyncOpenAI
    http: httpx.AsyncClient
    table: ReplicaTable
    engine_url: str
    key_id: str

    async def usage(self) -> list[dict[str, object]]:
        admin = {"Authorization": f"Bearer {self.app.state.settings.admin_key}"}
        answer = await self.http.get("/admin/usage", params={"key_id": self.key_id},
                                     headers=admin)  # fmt: skip
        data: list[dict[str, object]] = answer.json()["data"]
        return data

    def replica(self, node_id: str, endpoint: str | None = None) -> Replica:
        return Replica(node_id=node_id, deployment_id="droute", model=MODEL,
                       endpoint=endpoint or self.engine_url)  # fmt: skip

    def routable(self) -> list[str]:
        return sorted(r.node_id for r in self.app.state.replicas.replicas(MODEL))


@pytest.fixture(scope="module")
async def engine() -> AsyncIterator[str]:
    async with sim_engine(MODEL) as process:
        yield process.base_url


@pytest.fixture
async def routed(servers: Servers, database: str, engine: str) -> AsyncIterator[Routed]:
    redis = Redis.from_url(servers.redis_url)
    await redis.flushdb()
    admin_key, _ = generate_key()
    settings = GatewaySettings(
        nats_url=servers.nats_url, postgres_dsn=database, redis_url=servers.redis_url,
        admin_key=admin_key, key_cache_seconds=0, table_refresh=30, eject_for=60,
    )  # fmt: skip
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            created = await http.post("/admin/keys", json={"name": "router"},
                                      headers={"Authorization": f"Bearer {admin_key}"})  # fmt: skip
            client = openai.AsyncOpenAI(
                base_url="http://gw/v1", api_key=created.json()["key"], max_retries=0,
                http_client=http,  # type: ignore[arg-type]  # the SDK types its own httpx fork
            )  # fmt: skip
            yield Routed(app, client, http, ReplicaTable(redis), engine, created.json()["id"])
    await redis.aclose()


async def test_the_gateway_follows_the_table_as_health_announces_changes(
    routed: Routed,
) -> None:
    # table_refresh is 30 s: what the gateway sees within this test, it was told.
    await routed.table.apply([routed.replica("r1")], [])
    await eventually(lambda: _async(routed.routable() == ["r1"]))
    await routed.table.apply([routed.replica("r2")], [])
    await eventually(lambda: _async(routed.routable() == ["r1", "r2"]))

    served_by = set()
    for _ in range(30):
        raw = await routed.client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=4
        )
        assert raw.parse().choices[0].message.content
        served_by.add(raw.headers["x-cic-replica"])
    assert served_by == {"r1", "r2"}

    await routed.table.apply([], ["r1"])
    await eventually(lambda: _async(routed.routable() == ["r2"]))
    assert [m.id for m in (await routed.client.models.list()).data] == [MODEL]


async def test_a_replica_that_fails_is_skipped_and_no_request_fails(routed: Routed) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    await routed.table.apply([routed.replica("alive"), routed.replica("dead", dead)], [])
    await eventually(lambda: _async(routed.routable() == ["alive", "dead"]))
    for _ in range(20):
        raw = await routed.client.completions.with_raw_response.create(
            model=MODEL, prompt="once upon", max_tokens=4
        )
        assert raw.headers["x-cic-replica"] == "alive"
        assert raw.parse().choices[0].text
    assert routed.routable() == ["alive"]  # ejected from this gateway's view
    assert sum(routed.app.state.replicas.in_flight.values()) == 0
    metered = await eventually(lambda: _metered(routed, requests=20))
    assert metered is not None
    assert metered["completion_tokens"] == 20 * 4  # each request counted once


async def test_embeddings_are_served_through_the_gateway(routed: Routed) -> None:
    await routed.table.apply([routed.replica("r1")], [])
    await eventually(lambda: _async(routed.routable() == ["r1"]))
    result = await routed.client.embeddings.create(model=MODEL, input=["a", "b c"])
    assert len(result.data) == 2
    assert result.data[0].embedding
    assert result.usage.prompt_tokens > 0


async def test_streams_are_metered_and_handed_on_as_the_client_asked(routed: Routed) -> None:
    await routed.table.apply([routed.replica("r1")], [])
    await eventually(lambda: _async(routed.routable() == ["r1"]))
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    chat = {"model": MODEL, "messages": messages, "max_tokens": 5}

    plain = await routed.client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=5, stream=True
    )
    chunks = [chunk async for chunk in plain]
    assert chunks
    assert all(chunk.choices and chunk.usage is None for chunk in chunks)
    key = {"Authorization": f"Bearer {routed.client.api_key}"}
    raw = await routed.http.post("/v1/chat/completions", json={**chat, "stream": True},
                                 headers=key)  # fmt: skip
    assert b'"usage"' not in raw.content  # byte for byte what the engine sends unasked
    assert raw.content.endswith(b"data: [DONE]\n\n")

    asked = await routed.client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=5, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = [chunk async for chunk in asked]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5

    await routed.client.completions.create(model=MODEL, prompt="hi", max_tokens=3)
    metered = await eventually(lambda: _metered(routed, requests=4))
    assert metered is not None
    assert metered["completion_tokens"] == 5 + 5 + 5 + 3
    assert metered["model"] == MODEL


async def _metered(routed: Routed, requests: int) -> dict[str, object] | None:
    rows = await routed.usage()
    return rows[0] if len(rows) == 1 and rows[0]["requests"] == requests else None


async def _async(value: bool) -> bool:
    return value


async def test_a_key_over_its_rate_limit_gets_429_with_retry_after(routed: Routed) -> None:
    await routed.table.apply([routed.replica("r1")], [])
    await eventually(lambda: _async(routed.routable() == ["r1"]))
    admin = {"Authorization": f"Bearer {routed.app.state.settings.admin_key}"}
    created = await routed.http.post("/admin/keys", json={"name": "slow", "rpm_limit": 2},
                                     headers=admin)  # fmt: skip
    assert created.json()["rpm_limit"] == 2
    limited = routed.client.with_options(api_key=created.json()["key"])
    for _ in range(2):
        await limited.completions.create(model=MODEL, prompt="hi", max_tokens=2)
    with pytest.raises(openai.RateLimitError) as refused:
        await limited.completions.create(model=MODEL, prompt="hi", max_tokens=2)
    assert refused.value.status_code == 429
    assert int(refused.value.response.headers["retry-after"]) >= 1
    assert refused.value.code == "rate_limit_exceeded"


async def test_a_request_outlasts_a_moment_when_a_model_has_no_replica_listed(
    routed: Routed,
) -> None:
    """Health took the model's last replica out of the table and puts one back a moment
    later (a pass that judged it wrongly, a replacement coming up): a request arriving
    in between waits for it instead of failing; with none back, it fails as before."""
    await routed.table.apply([routed.replica("r1")], [])
    await eventually(lambda: _async(routed.routable() == ["r1"]))
    await routed.table.apply([], ["r1"])
    await eventually(lambda: _async(routed.routable() == []))
    asking = asyncio.create_task(
        routed.client.completions.create(model=MODEL, prompt="hi", max_tokens=2)
    )
    await asyncio.sleep(0.5)  # the request has found no replica by now (without the wait: 404)
    await routed.table.apply([routed.replica("r2")], [])
    answer = await asking
    assert answer.choices[0].text

    await routed.table.apply([], ["r2"])
    await eventually(lambda: _async(routed.routable() == []))
    with pytest.raises(openai.NotFoundError):  # no deployment serves it: after the wait
        await routed.client.completions.create(model=MODEL, prompt="hi", max_tokens=2)
