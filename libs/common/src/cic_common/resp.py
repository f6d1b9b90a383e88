"""A lean Redis client for the hottest calls: one pipelined connection, RESP encoded and
parsed by hiredis, one future per call.

redis-py's asyncio client takes a pooled connection, runs its retry and
deprecated-argument wrappers and its response callbacks for every command: on the
gateway's request path (one rate-limit script per request) that was most of the cost
of the call. Here a call is one write and one future; replies come back in the order
the calls were sent (Redis answers each connection in order), so calls made at once
share the connection's round trips, and the calls made in one turn of the event loop
share one write (``coalesce``). A lost connection fails the calls in flight and is
made again on the next call.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from typing import Any, cast

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from cic_common.coalesce import Coalescing

__all__ = ["RespClient"]


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.reader = hiredis.Reader()
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: Coalescing | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transport is not a subclass; calls made in one loop turn share a write
        self.transport = Coalescing(cast(asyncio.Transport, transport), self.loop)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            waiter = self.waiting.popleft()
            if waiter.done():
                continue  # its caller was cancelled; the reply is dropped in order
            if isinstance(reply, hiredis.ReplyError):
                text = str(reply)
                kind = NoScriptError if text.startswith("NOSCRIPT") else ResponseError
                waiter.set_exception(kind(text))
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_exception(RedisConnectionError(f"connection to Redis lost: {exc}"))


class RespClient:
    """Calls over one TCP connection to ``host:port``, selecting ``db`` and
    authenticating as the URL says."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._address = (host, port)
        self._hello: list[tuple[Any, ...]] = []
        if password is not None:
            self._hello.append(("AUTH", username, password) if username else ("AUTH", password))
        if db:
            self._hello.append(("SELECT", db))
        self._tls = tls
        self._protocol: _Protocol | None = None
        self._connecting = asyncio.Lock()

    async def call(self, *args: Any) -> Any:
        """One command's reply.

        Raises:
            redis.exceptions.ResponseError: Redis answered an error (``NoScriptError``
                for an unknown script).
            redis.exceptions.ConnectionError: the connection could not be made or was
                lost before the reply.
        """
        protocol = self._protocol
        if protocol is None or protocol.closed or protocol.loop is not asyncio.get_running_loop():
            protocol = await self._connect()
        return await self._send(protocol, args)

    async def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None

    @staticmethod
    def _send(protocol: _Protocol, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        assert protocol.transport is not None
        waiter = asyncio.get_running_loop().create_future()
        protocol.waiting.append(waiter)
        protocol.transport.write(hiredis.pack_command(args))
        return waiter

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        if self._protocol is not None and self._protocol.loop is not loop:
            self._protocol, self._connecting = None, asyncio.Lock()  # another loop's (tests)
        async with self._connecting:
            if self._protocol is not None and not self._protocol.closed:
                return self._protocol
            try:
                _, protocol = await loop.create_connection(_Protocol, *self._address, ssl=self._tls)
            except OSError as exc:
                raise RedisConnectionError(f"cannot reach Redis at {self._address}: {exc}") from exc
            for command in self._hello:
                await self._send(protocol, command)
            self._protocol = protocol
            return protocol
