"""Health's own HTTP poll of an engine, against real sockets: what counts as an answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from cic_common.processes import free_port
from cic_health.adapters.poller import EnginePoller

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def answering(status: bytes) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        assert request.startswith(b"GET /v1/health HTTP/1.1\r\n")  # the endpoint's path kept
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    return handle


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(30)  # accepts, never answers: a hung engine


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    yield start
    for server in servers:
        server.close()


@pytest.mark.parametrize(
    ("status", "ok"),
    [(b"200 OK", True), (b"503 Service Unavailable", False), (b"404 Not Found", False)],
)
async def test_only_a_200_is_healthy(
    serve: Callable[[Handler], Awaitable[str]], status: bytes, ok: bool
) -> None:
    endpoint = await serve(answering(status))
    answered, seconds = await EnginePoller(timeout=2).poll(endpoint)
    assert answered is ok
    assert seconds >= 0


async def test_a_hung_engine_fails_at_the_timeout_and_nothing_fails_the_pass(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    hung = await serve(silent)
    poller = EnginePoller(timeout=0.3)
    results = await asyncio.gather(
        poller.poll(hung),
        poller.poll(f"http://127.0.0.1:{free_port()}"),  # nobody listening
        poller.poll("not a url"),
        poller.poll("ftp://127.0.0.1:21"),
    )
    assert [ok for ok, _ in results] == [False, False, False, False]
    assert results[0][1] >= 0.3  # the hung one was waited for, up to the timeout


async def test_a_status_line_in_pieces_and_a_named_host_are_read_whole(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    async def dribbling(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        for piece in (b"HTTP/1.1 2", b"00 OK", b"\r\nContent-Length: 0\r\n\r\n"):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.05)
        writer.close()

    endpoint = await serve(dribbling)
    ok, _ = await EnginePoller(timeout=2).poll(endpoint)
    assert ok
    named, _ = await EnginePoller(timeout=2).poll(endpoint.replace("127.0.0.1", "localhost"))
    assert named
