"""The upstream client: forwards a request to one replica over kept-alive connections
(``http1``), each try watched by the :class:`Watchdog`, which may abandon it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from cic_gateway.adapters.http1 import Disconnected, Exchange, Expired, Pool, Target
from cic_gateway.adapters.watchdog import Attempt, Watchdog

__all__ = ["UpstreamClient", "UpstreamResponse", "UpstreamTimeout", "UpstreamUnavailable"]

_LOST = (Disconnected, Expired)


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
    _exchange: Exchange
    _attempt: Attempt
    _watchdog: Watchdog

    async def read(self) -> bytes:
        """The whole body.

        Raises:
            UpstreamUnavailable: the replica died, or stopped answering, on the way.
        """
        try:
            return await self._exchange.read()
        except _LOST as exc:
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
            async for chunk in self._exchange.chunks():
                attempt.progress = time.monotonic()
                yield chunk
        except _LOST as exc:
            raise _lost(exc, attempt) from exc
        finally:
            self.release()

    def release(self) -> None:
        self._watchdog.done(self._attempt)
        self._exchange.release()


def _lost(exc: BaseException, attempt: Attempt) -> UpstreamUnavailable:
    if attempt.abandoned:
        return UpstreamUnavailable("the replica stopped answering (its health check failed)")
    if isinstance(exc, Expired):
        return UpstreamTimeout(str(exc))
    return UpstreamUnavailable(str(exc))


class UpstreamClient:
    """Kept-alive connections to every replica, and a watchdog over the tries on them."""

    def __init__(
        self,
        connect_timeout: float,
        total_timeout: float,
        *,
        probe_after: float = 2.0,
        probe_timeout: float = 1.0,
    ) -> None:
        self._pool = Pool(connect_timeout=connect_timeout)
        self._total_timeout = total_timeout
        self._probe_after = probe_after
        self._probe_timeout = probe_timeout
        self._targets: dict[tuple[str, str], Target] = {}
        self.watchdog: Watchdog | None = None

    async def start(self, on_stalled: Watchdog.Callback | None = None) -> None:
        self.watchdog = Watchdog(self.alive, self._probe_after, on_stalled)
        self.watchdog.start()

    async def close(self) -> None:
        if self.watchdog is not None:
            await self.watchdog.close()
        self._pool.close()

    async def alive(self, endpoint: str) -> bool:
        """Whether the engine at ``endpoint`` answers its health check in time."""
        exchange = Exchange()
        loop = asyncio.get_running_loop()
        exchange.expire_at(loop, loop.time() + self._probe_timeout)
        try:
            async with asyncio.timeout(self._probe_timeout):  # connecting included
                await self._pool.send(exchange, self._target(endpoint, "/health", "GET"), b"")
                await exchange.read()
        except (*_LOST, TimeoutError):
            return False
        finally:
            exchange.release()
        return exchange.status == 200

    def _target(self, endpoint: str, path: str, method: str = "POST") -> Target:
        """The replica's address and request head, kept: building them costs more than
        sending."""
        target = self._targets.get((endpoint, path))
        if target is None:
            if len(self._targets) > 4096:
                self._targets.clear()
            target = self._targets[endpoint, path] = Target(endpoint, path, method)
        return target

    async def post(self, node_id: str, endpoint: str, path: str, body: bytes) -> UpstreamResponse:
        """POST ``body`` as JSON to ``endpoint + path``; returns once the status line has
        arrived. Waiting longer than ``probe_after`` gets the replica probed, and its
        failing the probe ends the wait.

        Raises:
            UpstreamUnavailable: connection refused or reset, a 5xx from the replica,
                or a failed probe (nothing was generated yet, so another replica may
                safely be tried).
        """
        assert self.watchdog is not None, "start() first"
        attempt = self.watchdog.watch(node_id, endpoint, time.monotonic() + self._total_timeout)
        exchange = attempt.exchange = Exchange()
        try:
            await self._pool.send(exchange, self._target(endpoint, path), body)
        except _LOST as exc:
            self.watchdog.done(attempt)
            exchange.release()
            raise _lost(exc, attempt) from exc
        except BaseException:  # cancelled (the client left): forget the try
            self.watchdog.done(attempt)
            exchange.release()
            raise
        if exchange.status >= 500:
            self.watchdog.done(attempt)
            exchange.release()
            raise UpstreamUnavailable(f"replica answered {exchange.status}")
        return UpstreamResponse(exchange.status, exchange.content_type, exchange, attempt,
                                self.watchdog)  # fmt: skip
