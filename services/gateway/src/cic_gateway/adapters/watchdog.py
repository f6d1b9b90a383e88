"""Noticing a replica that stopped answering, without timing out slow answers.

A replica that is killed resets its connections, and its requests fail at once. One that
hangs (a stopped process, a wedged GPU, a cut network) answers nothing, and a request's
own timeout cannot tell that from a long generation. So each try at a replica is watched:
once it has waited ``probe_after`` seconds for its next bytes, the replica's health check
is asked (once per replica, for all its waiting tries). A replica that answers it keeps
its requests however slow they are; one that does not is reported, and every try waiting
on it is abandoned, to be retried or resumed elsewhere. The same rounds end the tries
whose own time (``upstream_timeout``) is up, to within half a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from cic_gateway.adapters.http1 import Exchange, Expired

__all__ = ["Attempt", "Watchdog"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Attempt:
    """One try at one replica, from the request sent to its last byte read."""

    node_id: str
    endpoint: str
    progress: float = field(default_factory=time.monotonic)
    """When the last bytes came (or the request went)."""
    exchange: Exchange | None = None
    """The request and its answer, aborted to end the wait (what was read is kept)."""
    deadline: float = float("inf")
    """When the request's own time is up (``time.monotonic``), however it is going."""
    abandoned: bool = False

    def abandon(self) -> None:
        self.abandoned = True
        if self.exchange is not None:
            self.exchange.abort()


class Watchdog:
    """Probes the replicas that keep tries waiting; abandons the tries of those that fail."""

    Callback = Callable[[str], None]

    def __init__(
        self,
        alive: Callable[[str], Awaitable[bool]],
        probe_after: float,
        on_stalled: Callback | None = None,
    ) -> None:
        self._alive = alive
        self._probe_after = probe_after
        self._on_stalled = on_stalled
        self._tries: dict[str, set[Attempt]] = {}
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self.abandoned = 0

    def watch(self, node_id: str, endpoint: str, deadline: float = float("inf")) -> Attempt:
        attempt = Attempt(node_id, endpoint, deadline=deadline)
        self._tries.setdefault(node_id, set()).add(attempt)
        return attempt

    def done(self, attempt: Attempt) -> None:
        tries = self._tries.get(attempt.node_id)
        if tries is not None:
            tries.discard(attempt)
            if not tries:
                del self._tries[attempt.node_id]

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        self._closing.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(0.5, self._probe_after / 2)):
                    await self._closing.wait()
            if self._closing.is_set():
                return
            try:
                await self.check(time.monotonic())
            except Exception:
                log.exception("the replica watchdog's round failed; next round as usual")

    async def check(self, now: float) -> None:
        """One round: end the tries whose time is up (one timer for all, rather than one
        per request), then probe every replica with a try waiting ``probe_after`` or
        longer."""
        for tries in list(self._tries.values()):
            for attempt in [a for a in tries if a.deadline <= now]:
                self.done(attempt)
                if attempt.exchange is not None:
                    attempt.exchange.abort(Expired("the request's time is up"))
        stalled = {
            node: [a for a in tries if now - a.progress >= self._probe_after]
            for node, tries in self._tries.items()
        }
        stalled = {node: waiting for node, waiting in stalled.items() if waiting}
        if not stalled:
            return
        verdicts = await asyncio.gather(
            *(self._alive(waiting[0].endpoint) for waiting in stalled.values())
        )
        for (node, waiting), alive in zip(stalled.items(), verdicts, strict=True):
            if alive:
                continue
            log.warning("replica stopped answering; its requests go elsewhere",
                        extra={"node": node, "requests": len(waiting)})  # fmt: skip
            if self._on_stalled is not None:
                self._on_stalled(node)
            for attempt in waiting:
                if attempt not in self._tries.get(node, ()):
                    continue  # it ended while the probe was out
                self.abandoned += 1
                try:
                    attempt.abandon()
                except Exception:
                    log.exception("a try could not be abandoned", extra={"node": node})
