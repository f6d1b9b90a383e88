"""The one loop skeleton every periodic task uses: fetch, process, back off, drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, Protocol, TypeVar

__all__ = ["Lease", "Loop"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class Lease(Protocol):
    """Exclusive right to run a loop's pass among several instances."""

    async def acquire(self) -> bool:
        """Take or renew the lease; False when another instance holds it."""
        ...

    async def release(self) -> None: ...


class Loop(Generic[T]):
    """Every ``interval`` seconds: ``fetch`` the items due, then ``process`` each one.

    A failing ``process`` is logged and does not stop the others. A failing ``fetch``
    backs off exponentially (with jitter) up to ``max_backoff``. With a ``lease`` only the
    holder runs a pass. ``wake()`` starts the next pass now (an event arrived); ``stop()``
    lets the current pass finish and returns.
    """

    def __init__(
        self,
        name: str,
        fetch: Callable[[], Awaitable[Iterable[T]]],
        process: Callable[[T], Awaitable[None]],
        *,
        interval: float,
        lease: Lease | None = None,
        max_backoff: float = 30.0,
    ) -> None:
        self.name = name
        self._fetch = fetch
        self._process = process
        self._interval = interval
        self._lease = lease
        self._max_backoff = max_backoff
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.passes = 0

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        failures = 0
        try:
            while not self._stopping.is_set():
                delay = self._interval
                try:
                    await self.run_once()
                    failures = 0
                except Exception:
                    failures += 1
                    delay = min(self._max_backoff, self._interval * 2.0**failures)
                    delay *= random.uniform(0.8, 1.2)
                    log.exception("loop pass failed", extra={"loop": self.name})
                await self._sleep(delay)
        finally:
            if self._lease is not None:
                try:
                    await self._lease.release()
                except Exception:
                    log.warning("lease release failed", extra={"loop": self.name})

    async def run_once(self) -> None:
        """One pass (used by ``run`` and by tests)."""
        if self._lease is not None and not await self._lease.acquire():
            return
        self._wake.clear()
        items = list(await self._fetch())
        for item in items:
            if self._stopping.is_set():
                break
            try:
                await self._process(item)
            except Exception:
                log.exception("loop item failed", extra={"loop": self.name, "item": str(item)})
        self.passes += 1

    async def _sleep(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=delay)
