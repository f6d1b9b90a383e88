"""uvicorn's HTTP protocol with a lane of the gateway's own for the proxied routes.

Per request, ASGI costs more than proxying does: uvicorn builds a scope and a cycle,
runs the app in a task that passes messages through ``receive`` and ``send``, and
Starlette makes request and response objects around them. A ``POST`` to one of the
proxied routes (``openai_api.PROXIED``) therefore goes from uvicorn's parser straight
to ``openai_api.answer``, and its answer is written as bytes: the head and a whole body
in one write, a stream in chunked encoding with the transport's flow control. Anything
else — other routes, a pipelined request, ``Expect: 100-continue``, an upgrade — is
served by uvicorn and the ASGI app as before; the lane stands in for uvicorn's cycle
meanwhile, so uvicorn queues a pipelined request behind it and marks it disconnected.

Writes through uvicorn are gathered per loop turn (``cic_common.coalesce``: its head and
body leave in one system call); the lane's, each whole already, leave at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

from cic_common.coalesce import Coalescing
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from cic_gateway.domain.errors import ApiError
from cic_gateway.entrypoints.auth import key_of
from cic_gateway.entrypoints.fast_path import GatewayApp
from cic_gateway.entrypoints.openai_api import PROXIED, answer, error_answer
from cic_gateway.entrypoints.relay import Answer

__all__ = ["GatewayHttpProtocol"]

log = logging.getLogger(__name__)
_LANE = frozenset(path.encode() for path in PROXIED)
MAX_HEAD_BYTES = 64 * 1024
"""A request's line and headers together; past this it is answered 431 and its connection
closed (the parser itself would hold a head of any size)."""


_LINGER_SECONDS = 2.0
"""How long a refused connection's input is read and dropped before it is closed."""


class _HeadTooLarge(Exception):
    """Raised from a parser callback: the parser stops there."""


class _Quiet:
    def set(self) -> None:
        """uvicorn wakes its cycle's reader with this; the lane has none waiting."""


class _Lane:
    """A request the lane serves, and uvicorn's stand-in cycle while it does."""

    __slots__ = ("body", "disconnected", "headers", "keep_alive", "path", "response_complete",
                 "size", "task", "too_large")  # fmt: skip
    message_event = _Quiet()

    def __init__(self, path: str, headers: list[tuple[bytes, bytes]], keep_alive: bool) -> None:
        self.path = path
        self.headers = headers
        self.keep_alive = keep_alive
        self.body: list[bytes] = []
        self.size = 0
        self.too_large = False
        self.response_complete = False
        self.disconnected = False
        self.task: asyncio.Task[None] | None = None

    def header(self) -> Callable[[str], str | None]:
        found = {n.decode("latin-1"): v.decode("latin-1") for n, v in self.headers}
        return found.get


def _gateway_of(app: Any) -> GatewayApp | None:
    """The gateway app under whatever middleware uvicorn wrapped it in."""
    for _ in range(8):
        if isinstance(app, GatewayApp):
            return app
        app = getattr(app, "app", None)
    return None


class GatewayHttpProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(cast(asyncio.Transport, Coalescing(transport, self.loop)))
        self._refused = False
        self._head_bytes, self._head_parsed, self._in_head = 0, 0, False
        """What the request being read sent before its headers were complete (every read,
        so an endless header counts too), and what the parser made of it."""
        self._lane: _Lane | None = None
        """The request being read into the lane."""
        self._serving: _Lane | None = None
        """The request the lane is answering."""
        self._gateway = _gateway_of(self.app)

    def connection_lost(self, exc: Exception | None) -> None:
        serving = self._serving
        super().connection_lost(exc)
        if serving is not None and serving.task is not None and not serving.response_complete:
            serving.disconnected = True
            serving.task.cancel()  # the client left: its upstream request ends now, not later

    def on_message_begin(self) -> None:
        self._head_bytes, self._head_parsed, self._in_head = 0, 0, True
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._parsed(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._parsed(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _parsed(self, size: int) -> None:
        """A head that arrived in one read is counted as the parser reads it."""
        self._head_parsed += size
        if self._head_parsed > MAX_HEAD_BYTES:
            raise _HeadTooLarge  # the parser stops; uvicorn answers (send_400_response)

    def send_400_response(self, msg: str) -> None:
        if self._head_parsed > MAX_HEAD_BYTES:
            self._refuse_head()
        else:
            super().send_400_response(msg)

    def data_received(self, data: bytes) -> None:
        """Fed to the parser; while a request's headers are not complete, every byte
        counts towards its head (the parser would grow an endless header in memory)."""
        if self._refused or self.transport.is_closing():
            return
        super().data_received(data)
        if not self._in_head or self.transport.is_closing():
            return
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse_head()

    def _refuse_head(self) -> None:
        """431 in OpenAI's shape, and the connection closed."""
        found = error_answer(ApiError(431, f"request headers exceed {MAX_HEAD_BYTES} bytes",
                                      code="headers_too_large"))  # fmt: skip
        head = [STATUS_LINE[431], *(b"%s: %s\r\n" % p for p in self.server_state.default_headers)]
        head += [b"content-type: application/json\r\n", b"connection: close\r\n",
                 b"content-length: %d\r\n\r\n" % len(found.body)]  # fmt: skip
        self.transport.write(b"".join(head) + found.body)
        # Half-closed, what still comes read and dropped for a moment: closed at once with
        # unread input, the socket would be reset and the client might lose the answer.
        self._refused = True
        self.transport.write_eof()
        self.loop.call_later(_LINGER_SECONDS, self.transport.close)

    def on_headers_complete(self) -> None:
        self._in_head = False
        lane = self._take()
        if lane is None:
            super().on_headers_complete()
            return
        self._lane = self.cycle = lane  # type: ignore[assignment]
        if lane.too_large:  # declared too large: refused now, not after the whole upload
            lane.keep_alive = False
            self._start(lane)

    def _take(self) -> _Lane | None:
        """A lane for this request, if it is one the lane serves alone."""
        if self._gateway is None or self.expect_100_continue or self.pipeline:
            return None
        if self.cycle is not None and not self.cycle.response_complete:
            return None  # pipelined behind an answer under way: uvicorn queues it
        path = self.url.partition(b"?")[0]
        if path not in _LANE or self.parser.get_method() != b"POST":
            return None
        if self.parser.should_upgrade():
            return None
        lane = _Lane(path.decode(), self.headers, self.parser.should_keep_alive())
        declared = next((v for n, v in self.headers if n == b"content-length"), b"0")
        assert self._gateway is not None
        limit: int = self._gateway.state.settings.max_body_bytes
        lane.too_large = declared.isdigit() and int(declared) > limit
        return lane

    def on_body(self, body: bytes) -> None:
        lane = self._lane
        if lane is None:
            super().on_body(body)
            return
        if lane.too_large:
            return
        lane.size += len(body)
        assert self._gateway is not None
        if lane.size > self._gateway.state.settings.max_body_bytes:
            lane.too_large, lane.body = True, []
        else:
            lane.body.append(body)

    def on_message_complete(self) -> None:
        lane = self._lane
        if lane is None:
            super().on_message_complete()
            return
        self._lane = None
        if lane.task is None:
            self._start(lane)

    def _start(self, lane: _Lane) -> None:
        self._serving = lane
        lane.task = self.loop.create_task(self._serve(lane))
        lane.task.add_done_callback(self.tasks.discard)
        self.tasks.add(lane.task)

    async def _serve(self, lane: _Lane) -> None:
        assert self._gateway is not None
        state = self._gateway.state
        try:
            if lane.too_large:
                limit = state.settings.max_body_bytes
                raise ApiError(413, f"request body exceeds {limit} bytes")
            header = lane.header()
            key = await key_of(state.keys, header("authorization"))
            found = await answer(state, key, lane.path, b"".join(lane.body), header)
        except ApiError as exc:
            found = error_answer(exc)
        except Exception:
            log.exception("a request failed", extra={"path": lane.path})
            found = error_answer(ApiError(500, "internal error"))
        try:
            await self._write(lane, found)
        except Exception:
            log.exception("an answer could not be written", extra={"path": lane.path})
            lane.keep_alive = False
        finally:
            lane.response_complete = True
            if self._serving is lane:
                self._serving = None
            if not lane.keep_alive:
                self.transport.close()
            self.on_response_complete()

    async def _write(self, lane: _Lane, found: Answer) -> None:
        head = [STATUS_LINE[found.status]]
        head += [b"%s: %s\r\n" % pair for pair in self.server_state.default_headers]
        head.append(b"content-type: %s\r\n" % found.media_type.encode("latin-1"))
        head += [f"{name}: {value}\r\n".encode("latin-1") for name, value in found.headers.items()]
        if not lane.keep_alive:
            head.append(b"connection: close\r\n")
        transport = self.transport
        send = cast(Coalescing, transport).write_now  # each write here is whole already
        if found.stream is None:
            head.append(b"content-length: %d\r\n\r\n" % len(found.body))
            send(b"".join(head) + found.body)
            return
        head.append(b"transfer-encoding: chunked\r\n\r\n")
        send(b"".join(head))
        stream = found.stream
        try:
            async for chunk in stream:
                if lane.disconnected or transport.is_closing():
                    lane.keep_alive = False
                    return  # the client left: the stream is closed, and with it the upstream
                if chunk:
                    send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                if self.flow.write_paused:
                    await self.flow.drain()
            send(b"0\r\n\r\n")
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
