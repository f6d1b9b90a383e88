"""This gateway's copy of the replica table, so no request waits on Redis."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter

from cic_common.replicas import CHANGED_CHANNEL, Replica, ReplicaTable
from redis.asyncio import Redis

__all__ = ["ReplicaView"]

log = logging.getLogger(__name__)


class ReplicaView:
    """The replica table as of its last read, with what this instance knows better.

    The table is read whole when health announces a new version (membership changed)
    and every ``refresh`` seconds besides, for the load figures that move without one
    and for an announcement missed while Redis was away. On top of it this instance
    counts its own requests in flight per replica (fresher than the last heartbeat's
    figures) and ejects, for ``eject_for`` seconds, a replica that just failed it.
    A request for a model whose last replica left the table a moment ago may wait for
    the next reads to bring one back (``regained``): a gap of a pass or two, not an
    outage, should not fail requests.
    """

    def __init__(self, redis: Redis, *, refresh: float = 1.0, eject_for: float = 10.0) -> None:
        self._redis = redis
        self._table = ReplicaTable(redis)
        self._refresh = refresh
        self._eject_for = eject_for
        self._models: dict[str, list[Replica]] = {}
        self._ejected: dict[str, float] = {}
        self._changed = asyncio.Event()
        self._reread = asyncio.Event()
        """Set (and replaced) at each read."""
        self._seen: dict[str, float] = {}
        """When each model last had replicas in the table."""
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.in_flight: Counter[str] = Counter()
        self.version = -1

    async def start(self) -> None:
        await self._read()
        self._task = asyncio.create_task(self._follow())

    async def close(self) -> None:
        """Stop following (the loop ends at its next wake-up, which this is)."""
        self._closing = True
        self._changed.set()
        if self._task is not None:
            await self._task

    def replicas(self, model: str) -> list[Replica]:
        """The replicas of ``model``, but those ejected (all of them if every one is:
        a replica that failed once is still better than none)."""
        listed = self._models.get(model, [])
        now = time.monotonic()
        usable = [r for r in listed if self._ejected.get(r.node_id, 0.0) <= now]
        return usable or listed

    async def regained(self, model: str, wait: float) -> bool:
        """Whether ``model``, which has no replica now but had one less than ``wait``
        seconds ago, gets one back within ``wait`` seconds (False at once for a model
        that had none lately: a deployment still warming up is not waited for)."""
        loop = asyncio.get_running_loop()
        seen = self._seen.get(model)
        if seen is None or time.monotonic() - seen > wait:
            return False
        deadline = loop.time() + wait
        while not self.replicas(model):
            reread, left = self._reread, deadline - loop.time()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await reread.wait()
        return True

    def models(self) -> list[str]:
        return sorted(m for m, replicas in self._models.items() if replicas)

    def eject(self, node_id: str) -> None:
        """Route no new requests to ``node_id`` for a while: it just failed one."""
        self._ejected[node_id] = time.monotonic() + self._eject_for

    async def _follow(self) -> None:
        """Re-read on each announcement and every ``refresh`` seconds, forever."""
        listener = asyncio.create_task(self._listen())
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._refresh):
                        await self._changed.wait()
                if self._closing:
                    return
                self._changed.clear()
                try:
                    await self._read()
                except Exception:
                    log.warning("replica table read failed; keeping the last one",
                                exc_info=True)  # fmt: skip
                    await asyncio.sleep(self._refresh)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                async with asyncio.timeout(5):
                    await listener

    async def _listen(self) -> None:
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(CHANGED_CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._changed.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("replica table announcements lost; re-subscribing",
                            exc_info=True)  # fmt: skip
                await asyncio.sleep(self._refresh)

    async def _read(self) -> None:
        version, models = await self._table.read()
        self._models, self.version = models, version
        now = time.monotonic()
        self._ejected = {n: until for n, until in self._ejected.items() if until > now}
        self._seen.update((model, now) for model, replicas in models.items() if replicas)
        self._reread.set()
        self._reread = asyncio.Event()
