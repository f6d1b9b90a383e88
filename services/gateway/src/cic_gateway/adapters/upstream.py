"""The upstream client: forwards a request to one replica with aiohttp (cheap per request)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp

__all__ = ["UpstreamClient", "UpstreamResponse", "UpstreamTimeout", "UpstreamUnavailable"]


class UpstreamUnavailable(Exception):
    """The replica could not be reached or failed before answering; try another one."""


class UpstreamTimeout(UpstreamUnavailable):
    """The replica did not answer in time."""


@dataclass
class UpstreamResponse:
    """An upstream answer whose body has not been read yet."""

    status: int
    content_type: str
    _response: aiohttp.ClientResponse

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        finally:
            self._response.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; the connection is released at the end or on error."""
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        finally:
            self._response.release()

    def close(self) -> None:
        self._response.close()


class UpstreamClient:
    """One pooled aiohttp session for every replica."""

    def __init__(self, connect_timeout: float, total_timeout: float) -> None:
        self._timeout = aiohttp.ClientTimeout(
            total=total_timeout, sock_connect=connect_timeout, connect=connect_timeout
        )
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=256, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, auto_decompress=False
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(self, url: str, body: bytes) -> UpstreamResponse:
        """POST ``body`` as JSON to ``url``; returns once the status line has arrived.

        Raises:
            UpstreamUnavailable: connection refused or reset, or a 502/503 from the replica
                (nothing was generated yet, so another replica may safely be tried).
        """
        assert self._session is not None, "start() first"
        try:
            response = await self._session.post(
                url, data=body, headers={"Content-Type": "application/json"}
            )
        except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
            raise UpstreamTimeout(f"{type(exc).__name__}: {exc}") from exc
        except aiohttp.ClientConnectionError as exc:
            raise UpstreamUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if response.status in (502, 503):
            response.release()
            raise UpstreamUnavailable(f"replica answered {response.status}")
        return UpstreamResponse(
            response.status, response.headers.get("Content-Type", "application/json"), response
        )
