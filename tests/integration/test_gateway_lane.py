"""The gateway's own HTTP lane for the proxied routes, spoken to byte by byte over real
sockets, served by uvicorn as in production: keep-alive, pipelining (answered in order,
the second by the ASGI app), ``Connection: close``, HTTP/1.0, ``Expect: 100-continue``,
an oversized body and bad input all answered as HTTP/1.1 and OpenAI's errors say."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from cic_common.processes import free_port
from cic_common.replicas import Replica, ReplicaTable
from cic_gateway.bootstrap import create_app
from cic_gateway.domain.keys import generate_key
from cic_gateway.serving import GatewayHttpProtocol
from cic_gateway.settings import GatewaySettings
from conftest import Servers
from redis.asyncio import Redis
from support import eventually, sim_engine

MODEL = "lane-model"
SLOW = "lane-slow-model"


@dataclass
class Served:
    port: int
    key: str

    def request(self, body: dict[str, object] | bytes, *, extra: str = "",
                version: str = "1.1", path: str = "/v1/completions") -> bytes:  # fmt: skip
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/{version}\r\nHost: gw\r\nAuthorization: Bearer {self.key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n{extra}\r\n"
        )
        return head.encode() + data


@pytest.fixture(scope="module")
async def served(servers: Servers, database: str) -> AsyncIterator[Served]:
    async with sim_engine(MODEL) as engine, sim_engine(SLOW, token_delay=0.05) as slow:
        redis = Redis.from_url(servers.redis_url)
        await redis.flushdb()
        admin_key, _ = generate_key()
        port = free_port()
        settings = GatewaySettings(nats_url=servers.nats_url, postgres_dsn=database,
                                   redis_url=servers.redis_url, admin_key=admin_key, port=port,
                                   max_body_bytes=4096, upstream_timeout=1.5)  # fmt: skip
        app = create_app(settings)
        config = uvicorn.Config(app, port=port, log_level="warning", ws="none",
                                http=GatewayHttpProtocol)  # fmt: skip
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        try:
            replica = Replica(node_id="l1", deployment_id="dlane", model=MODEL,
                              endpoint=engine.base_url)  # fmt: skip
            crawl = Replica(node_id="s1", deployment_id="dslow", model=SLOW, endpoint=slow.base_url)
            await ReplicaTable(redis).apply([replica, crawl], [])
            await eventually(lambda: _routes(app, server))
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as admin:
                admin.headers["Authorization"] = f"Bearer {admin_key}"
                created = await admin.post("/admin/keys", json={"name": "lane"})
            yield Served(port, created.json()["key"])
        finally:
            server.should_exit = True
            await serving
            await redis.aclose()


async def _routes(app: object, server: uvicorn.Server) -> bool:
    if not server.started:
        return False
    view = app.state.replicas  # type: ignore[attr-defined]
    return bool(view.replicas(MODEL)) and bool(view.replicas(SLOW))


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        parsed: dict[str, object] = json.loads(self.body)
        return parsed


async def read_reply(reader: asyncio.StreamReader) -> Reply:
    """One HTTP/1.1 answer: its status, headers and body (chunked encoding undone)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in head[1:] if line)}
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readexactly(2)
        return Reply(status, headers, body)
    return Reply(status, headers, await reader.readexactly(int(headers["content-length"])))


async def exchange(served: Served, data: bytes, answers: int = 1) -> tuple[list[Reply], bool]:
    """The answers to ``data`` sent at once on a new connection, and whether the gateway
    closed the connection after them."""
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        writer.write(data)
        replies = [await read_reply(reader) for _ in range(answers)]
        try:
            closed = await asyncio.wait_for(reader.read(1), 0.5) == b""
        except TimeoutError:
            closed = False
        return replies, closed
    finally:
        writer.close()


async def test_kept_alive_and_pipelined_requests_are_answered_in_order(served: Served) -> None:
    requests = b"".join(served.request({"model": MODEL, "prompt": "spot", "max_tokens": n})
                        for n in (1, 2, 3))  # fmt: skip
    replies, closed = await exchange(served, requests, answers=3)
    assert [r.status for r in replies] == [200, 200, 200]
    assert [r.json()["usage"]["completion_tokens"] for r in replies] == [1, 2, 3]  # type: ignore[index]
    assert replies[0].headers["x-cic-replica"] == "l1"
    assert replies[0].headers["content-type"] == "application/json"
    assert not closed  # kept alive


async def test_a_stream_is_chunked_and_ends_with_done(served: Served) -> None:
    body = {"model": MODEL, "prompt": "spot", "max_tokens": 3, "stream": True}
    (reply,), _ = await exchange(served, served.request(body))
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    events = [e for e in reply.body.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    assert len(events) == 5  # three tokens, the finish, [DONE]
    assert b'"usage"' not in reply.body  # the gateway's own request for usage is not shown


async def test_connection_close_and_http_1_0_are_honoured(served: Served) -> None:
    body = {"model": MODEL, "prompt": "spot", "max_tokens": 1}
    (closing,), closed = await exchange(served, served.request(body, extra="Connection: close\r\n"))
    assert (closing.status, closing.headers.get("connection"), closed) == (200, "close", True)
    (old,), closed = await exchange(served, served.request(body, version="1.0"))
    assert (old.status, closed) == (200, True)


async def test_expect_100_continue_is_served_by_the_asgi_app(served: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        data = served.request({"model": MODEL, "prompt": "spot", "max_tokens": 1},
                              extra="Expect: 100-continue\r\n")  # fmt: skip
        head, _, body = data.partition(b"\r\n\r\n")
        writer.write(head + b"\r\n\r\n")
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        reply = await read_reply(reader)
        assert reply.status == 200
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"{not json", 400, None),
        (b'{"prompt": "no model"}', 400, None),
        (b'{"model": "unknown-model", "prompt": "x"}', 404, "model_not_found"),
    ],
)
async def test_bad_input_is_an_openai_error_and_the_connection_goes_on(
    served: Served, data: bytes, status: int, code: str | None
) -> None:
    good = served.request({"model": MODEL, "prompt": "spot", "max_tokens": 1})
    (bad, after), closed = await exchange(served, served.request(data) + good, answers=2)
    assert bad.status == status
    error = bad.json()["error"]
    assert isinstance(error, dict)
    assert error["code"] == code
    assert after.status == 200
    assert not closed


async def test_a_request_without_a_key_is_refused_with_401(served: Served) -> None:
    data = served.request({"model": MODEL, "prompt": "x"}).replace(
        f"Authorization: Bearer {served.key}\r\n".encode(), b""
    )
    (reply,), _ = await exchange(served, data)
    assert reply.status == 401
    assert "missing API key" in str(reply.json()["error"])


async def test_an_answer_past_its_time_is_a_504_and_its_replica_keeps_its_place(
    served: Served,
) -> None:
    """Generating 100 tokens takes 5 s, the gateway allows 1.5: the request's own time
    is up, which is no fault of the replica's (it is not ejected; a stream just ends)."""
    slow = {"model": SLOW, "prompt": "spot", "max_tokens": 100}
    (late,), _ = await exchange(served, served.request(slow))
    assert late.status == 504
    error = late.json()["error"]
    assert isinstance(error, dict)
    assert error["message"].endswith("answered in time: the request's time is up")
    (cut,), _ = await exchange(served, served.request({**slow, "stream": True}))
    assert cut.status == 200
    assert b"data: [DONE]" not in cut.body  # ended where the time ran out, not resumed
    (quick,), _ = await exchange(served, served.request({**slow, "max_tokens": 1}))
    assert (quick.status, quick.headers["x-cic-replica"]) == (200, "s1")


async def test_a_body_declared_too_large_is_refused_before_it_is_sent(served: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        data = served.request(b'{"model": "' + b"x" * 5000 + b'"}')
        writer.write(data[: data.index(b"\r\n\r\n") + 4])  # the head alone: no body yet
        reply = await read_reply(reader)
        assert reply.status == 413
        assert reply.headers["connection"] == "close"
        assert await reader.read() == b""  # and the connection is closed
    finally:
        writer.close()
