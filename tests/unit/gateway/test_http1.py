"""The gateway's HTTP/1.1 client against a real socket server that misbehaves on cue:
connections kept and reused, streamed bodies handed over as they come, a kept
connection closed by the server retried once on a new one, and every way an answer
can fail ending as ``Disconnected`` or ``Expired``, never as a hang."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from cic_gateway.adapters.http1 import Disconnected, Exchange, Expired, Pool, Target

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class Server:
    """A socket server whose every connection runs ``handler``; counts what it saw."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.got_one = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for handler in self.handlers:
            handler.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)

    @property
    def endpoint(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        body = await reader.readexactly(length)
        self.requests.append(body)
        self.got_one.set()
        return body

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            await self.handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    pool = Pool(connect_timeout=1.0)
    yield pool
    pool.close()


async def exchange_with(pool: Pool, server: Server, body: bytes = b"{}", within: float = 5.0
                        ) -> Exchange:  # fmt: skip
    exchange = Exchange()
    loop = asyncio.get_running_loop()
    exchange.expire_at(loop, loop.time() + within)
    await pool.send(exchange, Target(server.endpoint, "/v1/completions"), body)
    return exchange


async def test_an_answer_is_read_and_its_connection_kept_for_the_next(pool: Pool) -> None:
    async def keep_answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await server.request(reader)
            writer.write(OK)

    async with Server(keep_answering) as server:
        for body in (b'{"a": 1}', b'{"b": 2}', b'{"c": 3}'):
            exchange = await exchange_with(pool, server, body)
            assert (exchange.status, exchange.content_type) == (200, "application/json")
            assert await exchange.read() == b"{}"
            exchange.release()
        assert server.requests == [b'{"a": 1}', b'{"b": 2}', b'{"c": 3}']
        assert server.connections == 1


async def test_a_chunked_stream_is_handed_over_as_it_comes(pool: Pool) -> None:
    gate = asyncio.Event()

    async def stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n6\r\ndata:1\r\n")  # fmt: skip
        await gate.wait()
        writer.write(b"6\r\ndata:2\r\n0\r\n\r\n")

    async with Server(stream) as server:
        exchange = await exchange_with(pool, server)
        assert exchange.content_type == "text/event-stream"
        chunks = exchange.chunks()
        assert await anext(chunks) == b"data:1"  # before the server sent the rest
        gate.set()
        assert [c async for c in chunks] == [b"data:2"]
        assert exchange.complete


async def test_a_kept_connection_the_server_closed_is_not_offered_again(pool: Pool) -> None:
    async def answer_then_drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.request(reader)
        writer.write(OK)  # says keep-alive, then closes: an idle timeout on the server
        await writer.drain()

    async with Server(answer_then_drop) as server:
        first = await exchange_with(pool, server, b'{"n": 1}')
        await first.read()
        first.release()
        await asyncio.sleep(0.05)  # the close reaches the client's idle connection
        second = await exchange_with(pool, server, b'{"n": 2}')
        assert await second.read() == b"{}"
        assert server.requests == [b'{"n": 1}', b'{"n": 2}']
        assert server.connections == 2


async def test_a_kept_connection_closed_unanswered_is_retried_once_on_a_new_one(
    pool: Pool,
) -> None:
    async def drop_the_second(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.request(reader)
        writer.write(OK)
        if server.connections == 1:  # the race with an idle timeout: read, then closed
            await server.request(reader)

    async with Server(drop_the_second) as server:
        first = await exchange_with(pool, server, b'{"n": 1}')
        await first.read()
        first.release()
        second = await exchange_with(pool, server, b'{"n": 2}')
        assert await second.read() == b"{}"
        assert server.requests == [b'{"n": 1}', b'{"n": 2}', b'{"n": 2}']
        assert server.connections == 2


async def test_a_new_connection_closed_unanswered_is_not_sent_again(pool: Pool) -> None:
    async def read_and_drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.request(reader)

    async with Server(read_and_drop) as server:
        with pytest.raises(Disconnected, match="connection lost"):
            await exchange_with(pool, server)
        assert len(server.requests) == 1


async def test_a_connection_lost_mid_body_fails_after_what_was_received(pool: Pool) -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n6\r\ndata:1\r\n")  # fmt: skip
        await writer.drain()

    async with Server(cut) as server:
        exchange = await exchange_with(pool, server)
        chunks = exchange.chunks()
        assert await anext(chunks) == b"data:1"
        with pytest.raises(Disconnected, match="connection lost"):
            await anext(chunks)


async def test_a_server_that_never_answers_ends_at_the_deadline(pool: Pool) -> None:
    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.request(reader)
        await asyncio.Event().wait()

    async with Server(hang) as server:
        with pytest.raises(Expired):
            await exchange_with(pool, server, within=0.2)
        assert len(server.requests) == 1


async def test_an_aborted_wait_ends_at_once_and_is_not_sent_again(pool: Pool) -> None:
    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.request(reader)
        await asyncio.Event().wait()

    async with Server(hang) as server:
        exchange = Exchange()
        sending = asyncio.create_task(
            pool.send(exchange, Target(server.endpoint, "/v1/completions"), b"{}")
        )
        await server.got_one.wait()
        exchange.abort()
        with pytest.raises(Disconnected, match="aborted"):
            await sending
        assert len(server.requests) == 1


async def test_an_unreachable_replica_and_a_garbled_answer_are_disconnections(
    pool: Pool,
) -> None:
    async def garble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await asyncio.Event().wait()

    async with Server(garble) as server:
        with pytest.raises(Disconnected, match="not valid HTTP"):
            await exchange_with(pool, server)
        closed = server.endpoint
    with pytest.raises(Disconnected, match="cannot connect"):
        await pool.send(Exchange(), Target(closed, "/v1/completions"), b"{}")


def test_a_target_refuses_what_is_not_an_http_endpoint() -> None:
    with pytest.raises(ValueError, match="not an http"):
        Target("unix:///run/engine.sock", "/v1/completions")
    target = Target("https://replica.example:8443/base/", "/v1/completions")
    assert (target.host, target.port, target.ssl) == ("replica.example", 8443, True)
    assert target.head.startswith(b"POST /base/v1/completions HTTP/1.1\r\n")
    assert b"Host: replica.example:8443\r\n" in target.head


async def test_an_answer_left_unread_past_the_pause_is_not_kept_for_another(pool: Pool) -> None:
    big = b"x" * ((1 << 20) + 100)  # its last bytes both complete it and pause reading

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await server.request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(big), big))
            await writer.drain()

    async with Server(flood) as server:
        first = await exchange_with(pool, server)
        await asyncio.sleep(0.2)  # the body arrives unread: reading pauses past 1 MiB
        first.release()  # left unread: a paused connection would never answer again
        second = await exchange_with(pool, server)
        assert len(await second.read()) == len(big)
        assert server.connections == 2


async def test_an_exchange_aborted_before_it_is_sent_sends_nothing(pool: Pool) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.request(reader)
        writer.write(OK)

    async with Server(answer) as server:
        exchange = Exchange()
        exchange.abort()  # say, the watchdog, while the connection was being made
        with pytest.raises(Disconnected, match="aborted"):
            await pool.send(exchange, Target(server.endpoint, "/v1/completions"), b"{}")
        await asyncio.sleep(0.05)
        assert server.requests == []
