"""The upstream client: forwards a request to one replica with aiohttp (cheap per request),
each try watched by the :class:`Watchdog`, which may abandon it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import yarl

from cic_gateway.adapters.watchdog import Attempt, Watchdog

__all__ = ["UpstreamClient", "UpstreamResponse", "UpstreamTimeout", "UpstreamUnavailable"]


_JSON = {"Content-Type": "application/json"}


class UpstreamUnavailable(Exception):
    """The replica could not be reached or failed before answering; try another one."""


class UpstreamTimeout(UpstreamUnavailable):
    """The request's own time (``upstream_timeout``) is up: not the replica's fault (a
    replica that stops answering is found out by the watchdog), so not retried."""


@dataclass
class UpstreamResponse:
    """An upstream answer whose body has not been read yet."""

    status: int
    content_type: str
    _response: aiohttp.ClientResponse
    _attempt: Attempt
    _watchdog: Watchdog

    async def read(self) -> bytes:
        """The whole body.

        Raises:
            UpstreamUnavailable: the replica died, or stopped answering, on the way.
        """
        try:
            return await self._response.read()
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            raise _lost(exc, self._attempt) from exc
        finally:
            self.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; released at the end or on error.

        Raises:
            UpstreamUnavailable: the replica died, or stopped answering, on the way.
        """
        attempt = self._attempt
        try:
            async for chunk in self._response.content.iter_any():
                attempt.progress = time.monotonic()
                yield chunk
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            raise _lost(exc, attempt) from exc
        finally:
            self.release()

    def release(self) -> None:
        self._watchdog.done(self._attempt)
        self._response.release()


def _lost(exc: BaseException, attempt: Attempt) -> UpstreamUnavailable:
    if attempt.abandoned:
        return UpstreamUnavailable("the replica stopped answering (its health check failed)")
    if isinstance(exc, TimeoutError) and not isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamTimeout(f"the request's time is up ({type(exc).__name__})")
    return UpstreamUnavailable(f"{type(exc).__name__}: {exc}")


class UpstreamClient:
    """One pooled aiohttp session for every replica."""

    def __init__(
        self,
        connect_timeout: float,
        total_timeout: float,
        *,
        probe_after: float = 2.0,
        probe_timeout: float = 1.0,
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(total=total_timeout, sock_connect=connect_timeout)
        self._probe_after = probe_after
        self._probe_timeout = aiohttp.ClientTimeout(total=probe_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._probes: aiohttp.ClientSession | None = None
        self._urls: dict[tuple[str, str], yarl.URL] = {}
        self.watchdog: Watchdog | None = None

    async def start(self, on_stalled: Watchdog.Callback | None = None) -> None:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, auto_decompress=False
        )
        # probes on connections of their own: never queued behind a busy replica's requests
        self._probes = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=True), timeout=self._probe_timeout
        )
        self.watchdog = Watchdog(self.alive, self._probe_after, on_stalled)
        self.watchdog.start()

    async def close(self) -> None:
        if self.watchdog is not None:
            await self.watchdog.close()
        for session in (self._session, self._probes):
            if session is not None:
                await session.close()

    async def alive(self, endpoint: str) -> bool:
        """Whether the engine at ``endpoint`` answers its health check in time."""
        assert self._probes is not None, "start() first"
        try:
            async with self._probes.get(f"{endpoint}/health") as r:
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError, ConnectionError):
            return False

    def _url(self, endpoint: str, path: str) -> yarl.URL:
        """The parsed URL, kept: parsing one (and its host) is a tenth of a request's cost."""
        url = self._urls.get((endpoint, path))
        if url is None:
            if len(self._urls) > 4096:
                self._urls.clear()
            url = self._urls[endpoint, path] = yarl.URL(endpoint + path)
        return url

    async def post(self, node_id: str, endpoint: str, path: str, body: bytes) -> UpstreamResponse:
        """POST ``body`` as JSON to ``endpoint + path``; returns once the status line has
        arrived. Waiting longer than ``probe_after`` gets the replica probed, and its
        failing the probe ends the wait.

        Raises:
            UpstreamUnavailable: connection refused or reset, a 5xx from the replica,
                or a failed probe (nothing was generated yet, so another replica may
                safely be tried).
        """
        assert self._session is not None, "start() first"
        assert self.watchdog is not None, "start() first"
        attempt = self.watchdog.watch(node_id, endpoint)
        try:
            async with asyncio.timeout(None) as deadline:
                attempt.deadline = deadline
                response = await self._session.post(self._url(endpoint, path), data=body,
                                                    headers=_JSON)  # fmt: skip
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            self.watchdog.done(attempt)
            raise _lost(exc, attempt) from exc
        except BaseException:  # cancelled (the client left): forget the try
            self.watchdog.done(attempt)
            raise
        finally:
            attempt.deadline = None
        attempt.response = response
        if response.status >= 500:
            self.watchdog.done(attempt)
            response.release()
            raise UpstreamUnavailable(f"replica answered {response.status}")
        content_type = response.headers.get("Content-Type", "application/json")
        return UpstreamResponse(response.status, content_type, response, attempt, self.watchdog)
