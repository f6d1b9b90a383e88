"""uvicorn's HTTP protocol, with each connection's writes gathered per loop turn.

uvicorn writes an answer's head and its body (and each chunk of a stream) with a system
call each; behind a proxy that is a large share of the CPU per request. Gathered
(``cic_common.coalesce``), a whole answer leaves in one call.
"""

from __future__ import annotations

import asyncio
from typing import cast

from cic_common.coalesce import Coalescing
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["GatewayHttpProtocol"]


class GatewayHttpProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(cast(asyncio.Transport, Coalescing(transport, self.loop)))
