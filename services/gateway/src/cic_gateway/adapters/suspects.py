"""Telling health which replicas failed this instance's requests.

A replica that fails a request is ejected from this instance's view at once (see
``ReplicaView.eject``); the other gateway instances learn of it only when health, the
table's one writer, takes it out. So each failure is also reported to health as a
``replica-suspected`` event, which has health poll the engine at once rather than at
its turn. Reports are sent off the request path, at most one per replica every
``every`` seconds from each instance: a replica failing a thousand requests is one
report, not a storm.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from cic_common.bus import Publisher
from cic_common.events import ReplicaSuspected

__all__ = ["Suspicions"]

log = logging.getLogger(__name__)


class Suspicions:
    def __init__(
        self,
        bus: Publisher,
        gateway: str,
        *,
        every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bus = bus
        self._gateway = gateway
        self._every = every
        self._clock = clock
        self._reported: dict[str, float] = {}
        self._sending: set[asyncio.Task[None]] = set()
        self.sent = 0

    def report(self, node_id: str, reason: str) -> None:
        """Report ``node_id`` (unless it was, less than ``every`` seconds ago)."""
        now = self._clock()
        if now - self._reported.get(node_id, -self._every) < self._every:
            return
        if len(self._reported) > 4096:
            self._reported = {n: t for n, t in self._reported.items() if now - t < self._every}
        self._reported[node_id] = now
        event = ReplicaSuspected(node_id=node_id, gateway=self._gateway, reason=reason[:500])
        task = asyncio.create_task(self._send(event))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, event: ReplicaSuspected) -> None:
        try:
            await self._bus.publish(event)
            self.sent += 1
        except Exception:  # health polls every engine anyway: a lost report only delays
            log.warning("could not report a failing replica to health",
                        extra={"node": event.node_id}, exc_info=True)  # fmt: skip

    async def drain(self) -> None:
        """Wait for the reports on their way."""
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
