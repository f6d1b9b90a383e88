"""The preemption watch: poll the cloud's metadata service and hand notices to the agent."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from cic_common.loops import Loop

from cic_node_agent.adapters.metadata import Watcher
from cic_node_agent.domain.notices import Notice

__all__ = ["PreemptionWatch"]

log = logging.getLogger(__name__)


class PreemptionWatch:
    """Polls ``watcher`` every ``interval`` seconds from boot (Azure only starts
    recording Scheduled Events for a VM once it has been asked). A failed poll is
    logged and retried with back-off; a stop cancels a long-poll in flight."""

    def __init__(
        self,
        watcher: Watcher,
        on_notice: Callable[[Notice], Awaitable[None]],
        on_rebalance: Callable[[], None],
        interval: float,
    ) -> None:
        self._watcher = watcher
        self._on_notice = on_notice
        self._on_rebalance = on_rebalance
        self._loop = Loop("preemption-watch", self._due, self._poll, interval=interval)
        self._task: asyncio.Task[None] | None = None
        self.notices = 0

    async def run(self) -> None:
        self._task = asyncio.create_task(self._loop.run())
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._watcher.close()

    def stop(self) -> None:
        self._loop.stop()
        if self._task is not None:
            self._task.cancel()

    async def _due(self) -> list[datetime]:
        return [datetime.now(UTC)]

    async def _poll(self, now: datetime) -> None:
        notice = await self._watcher.poll(now)
        if self._watcher.rebalance_recommended:
            self._on_rebalance()
        if notice is not None:
            self.notices += 1
            await self._on_notice(notice)
