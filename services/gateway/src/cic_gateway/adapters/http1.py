"""A lean HTTP/1.1 client for the gateway's requests to replicas.

A general client does much per request that a proxy to known replicas does not need:
URL and header objects, cookie jars, tracing hooks, a reader stream per response. Here
a request is one prebuilt head plus its body in a single write; the answer is parsed
by ``httptools`` (the parser under uvicorn) straight from ``data_received`` into the
waiting reader. Connections are kept per replica and reused newest first; one idle
longer than ``idle_timeout`` (under the engines' own keep-alive, 5 s in vLLM and
uvicorn) is closed rather than raced against the server closing it.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import cast
from urllib.parse import urlsplit

import httptools

__all__ = ["Disconnected", "Exchange", "Expired", "Pool", "Target"]

_PAUSE_AT = 1 << 20
"""Unread bytes at which a connection stops reading until its reader catches up."""


class Disconnected(ConnectionError):
    """The replica could not be reached, or the connection ended before the answer did."""


class Expired(TimeoutError):
    """The exchange's deadline passed."""


class Target:
    """Where requests to one endpoint and path go, with the fixed part of their head."""

    __slots__ = ("head", "host", "key", "port", "ssl")

    def __init__(self, endpoint: str, path: str, method: str = "POST") -> None:
        url = urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) endpoint: {endpoint!r}")
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.ssl = url.scheme == "https"
        self.key = (self.host, self.port, self.ssl)
        target = (url.path.rstrip("/") + path) or "/"
        self.head = (
            f"{method} {target} HTTP/1.1\r\nHost: {url.netloc}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()


class Exchange:
    """One request and its answer; it may be aborted from outside at any time."""

    __slots__ = ("_buffered", "_chunks", "_conn", "_error", "_head", "_timer", "_waiter",
                 "aborted", "complete", "content_type", "keep_alive", "received",
                 "status")  # fmt: skip

    def __init__(self) -> None:
        self.status = 0
        self.content_type = "application/json"
        self.complete = False
        self.keep_alive = False
        self.received = False
        self.aborted = False
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._conn: _Connection | None = None
        self._error: BaseException | None = None
        self._head: asyncio.Future[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def expire_at(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self._timer = loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self.abort(Expired("the exchange's time is up"))

    def abort(self, error: BaseException | None = None) -> None:
        """Ends the exchange: its reader wakes with ``error``; its connection is closed."""
        self.aborted = True
        self._fail(error or Disconnected("aborted"))
        if self._conn is not None:
            self._conn.close()

    async def read(self) -> bytes:
        """The whole body."""
        parts: list[bytes] = []
        async for chunk in self.chunks():
            parts.append(chunk)
        return b"".join(parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (chunked encoding undone)."""
        while True:
            if self._chunks:
                data = b"".join(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
                self._chunks.clear()
                if self._buffered >= _PAUSE_AT and self._conn is not None:
                    self._conn.resume()
                self._buffered = 0
                yield data
                continue
            if self._error is not None:
                raise self._error
            if self.complete:
                return
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter

    def release(self) -> None:
        """Done with the answer: a complete one's connection is kept for the next request."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        conn, self._conn = self._conn, None
        if conn is None:
            return
        conn.exchange = None
        if self.complete and self.keep_alive and self._error is None and not conn.paused:
            conn.idle()
        else:
            conn.close()

    # -- fed by the connection ------------------------------------------------------

    def _bind(self, conn: _Connection, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        self._conn = conn
        conn.exchange = self
        self._head = loop.create_future()
        if self._error is not None:
            self._head.set_exception(self._error)
        return self._head

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _headers(self, status: int, keep_alive: bool) -> None:
        self.status, self.keep_alive = status, keep_alive
        if self._head is not None and not self._head.done():
            self._head.set_result(None)

    def _body(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered >= _PAUSE_AT and self._conn is not None:
            self._conn.pause()
        self._wake()

    def _complete(self) -> None:
        self.complete = True
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if self.complete or self._error is not None:
            return
        self._error = error
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
            self._head.exception()  # retrieved: a reader may never come for it
        self._wake()


class _Connection(asyncio.Protocol):
    """One kept-alive connection to a replica, feeding its current exchange."""

    def __init__(self, pool: Pool, key: tuple[str, int, bool]) -> None:
        self.pool, self.key = pool, key
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.closed = False
        self.paused = False
        self.reused = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:  # bytes nobody asked for: the connection cannot be trusted
            self.close()
            return
        exchange.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            exchange.abort(Disconnected(f"the replica's answer is not valid HTTP: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.exchange is not None:
            self.exchange._fail(Disconnected(f"connection lost: {exc or 'closed by the replica'}"))
        else:  # an idle one, closed by the replica: no longer offered
            idle = self.pool._idle.get(self.key, [])
            if self in idle:
                idle.remove(self)

    # httptools' callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if self.exchange is not None and name.lower() == b"content-type":
            self.exchange.content_type = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self.exchange is not None:
            status = self.parser.get_status_code()
            self.exchange._headers(status, self.parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None:
            self.exchange._body(body)

    def on_message_complete(self) -> None:
        if self.exchange is not None:
            self.exchange._complete()

    def pause(self) -> None:
        if self.transport is not None and not self.closed and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.closed and self.paused:
            self.paused = False
            self.transport.resume_reading()

    def idle(self) -> None:
        if self.closed:
            return
        self.idle_since = asyncio.get_running_loop().time()
        self.pool._idle.setdefault(self.key, []).append(self)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Pool:
    """Kept-alive connections to every replica."""

    def __init__(self, *, connect_timeout: float, idle_timeout: float = 4.0) -> None:
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        self._idle: dict[tuple[str, int, bool], list[_Connection]] = {}
        self._tls: ssl.SSLContext | None = None

    async def send(self, exchange: Exchange, target: Target, body: bytes) -> None:
        """Sends ``body`` to ``target``; returns once the answer's head has come.

        A kept connection that the replica closed before answering is the race every
        kept-alive client has with the server's idle timeout: the request goes once
        more, on a new connection.

        Raises:
            Disconnected: the replica is unreachable or dropped the connection.
            Expired: the exchange's deadline passed.
        """
        loop = asyncio.get_running_loop()
        request = b"%s%d\r\n\r\n%s" % (target.head, len(body), body)
        for fresh in (False, True):
            conn = self._kept(target.key, loop.time()) if not fresh else None
            if conn is None:
                conn = await self._connect(target, loop)
            head = exchange._bind(conn, loop)
            if exchange.aborted:  # while connecting: nothing is sent
                conn.close()
                await head
            assert conn.transport is not None
            conn.transport.write(request)
            try:
                await head
                return
            except Disconnected:
                if exchange.aborted or exchange.received or not conn.reused or fresh:
                    raise
                exchange._error = None  # the stale connection's loss, not this request's

    def _kept(self, key: tuple[str, int, bool], now: float) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self._idle_timeout:
                conn.reused = True
                return conn
            conn.close()
        return None

    async def _connect(self, target: Target, loop: asyncio.AbstractEventLoop) -> _Connection:
        if target.ssl and self._tls is None:
            self._tls = ssl.create_default_context()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, target.key), target.host, target.port,
                    ssl=self._tls if target.ssl else None,
                )  # fmt: skip
        except (OSError, TimeoutError) as exc:
            raise Disconnected(f"cannot connect to {target.host}:{target.port}: {exc!r}") from exc
        return conn

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
