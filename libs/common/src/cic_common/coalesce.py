"""Writes to a socket gathered for one send a loop turn: an answer's head and body, or
the commands many requests made at once, leave in a single system call.

Writing to a transport sends at once, a system call per write; on a busy proxy those
calls are a large part of the CPU per request (uvicorn writes a response's head and its
body separately; each request's Redis call is a write of its own). Here writes made
during one turn of the event loop are joined and sent when the turn ends, which costs
a callback instead of a system call and delays nothing by more than that turn.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["Coalescing"]


class Coalescing:
    """A transport whose writes go out together at the end of the loop's turn; anything
    else is the wrapped transport's."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def write_now(self, data: bytes) -> None:
        """Sends ``data`` at once, after what is pending: for a writer that already joins
        what it sends (waiting for the turn's end would only delay it)."""
        if self._pending:
            self._pending.append(data)
            self.flush()
        elif not self._transport.is_closing():
            self._transport.write(data)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Sends what was written (at once: before closing, or when order demands)."""
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
