"""The node agent's work: keep the engine up, announce it, and heartbeat its state."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Literal

from cic_common.bus import Publisher
from cic_common.events import Heartbeat, NodeReady
from cic_common.loops import Loop

from cic_node_agent.adapters.engine import EngineExited, EngineProcess

__all__ = ["NodeAgent"]

log = logging.getLogger(__name__)

EngineState = Literal["starting", "ready", "restarting", "failed", "stopping"]


class NodeAgent:
    """Supervises the engine and speaks for the node.

    ``node-ready`` goes out each time the engine (re)starts answering; heartbeats go
    out every ``heartbeat_interval`` whatever the engine's state, so a crash loop is
    reported (``engine_state="failed"``) rather than hidden by silence.
    """

    def __init__(
        self,
        node_id: str,
        model: str,
        engine: EngineProcess,
        bus: Publisher,
        *,
        advertise_url: str,
        heartbeat_interval: float,
        ready_timeout: float,
        restart_limit: int,
    ) -> None:
        self.node_id = node_id
        self._model = model
        self._engine = engine
        self._bus = bus
        self._advertise_url = advertise_url
        self._ready_timeout = ready_timeout
        self._restart_limit = restart_limit
        self.state: EngineState = "starting"
        self.restarts = 0
        self._seq = 0
        self._stopping = asyncio.Event()
        self.heartbeats = Loop(
            "heartbeat", self._tick, self._heartbeat, interval=heartbeat_interval
        )

    async def run(self) -> None:
        beating = asyncio.create_task(self.heartbeats.run())
        try:
            await self._supervise()
        finally:
            self.state = "stopping"
            self.heartbeats.stop()
            await self._engine.stop()
            await beating

    def stop(self) -> None:
        self._stopping.set()

    async def _supervise(self) -> None:
        while not self._stopping.is_set():
            await self._engine.start()
            try:
                await self._until_stopped(self._engine.wait_ready(self._ready_timeout))
            except (EngineExited, TimeoutError) as exc:
                log.warning("engine did not become ready", extra={"error": str(exc)})
            else:
                if self._stopping.is_set():
                    return
                self.state = "ready"
                ready = NodeReady(node_id=self.node_id, endpoint=self._advertise_url,
                                  model=self._model)  # fmt: skip
                await self._bus.publish(ready, msg_id=f"ready:{self.node_id}:{self.restarts}")
                self.heartbeats.wake()
                await self._until_stopped(self._engine.wait())
            if self._stopping.is_set():
                return
            await self._engine.stop()
            self.restarts += 1
            if self.restarts > self._restart_limit:
                self.state = "failed"
                log.error("engine keeps failing; giving up", extra={"restarts": self.restarts})
                self.heartbeats.wake()
                await self._stopping.wait()
                return
            self.state = "restarting"
            self.heartbeats.wake()
            backoff = min(30.0, 0.5 * 2**self.restarts)
            log.warning("engine exited; restarting", extra={"in_seconds": backoff})
            await self._until_stopped(asyncio.sleep(backoff))

    async def _until_stopped(self, work: Awaitable[object]) -> None:
        """Await ``work`` unless a stop comes first (then cancel it); its errors propagate."""
        task = asyncio.ensure_future(work)
        stopping = asyncio.create_task(self._stopping.wait())
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        task.cancel()
        await asyncio.gather(task, stopping, return_exceptions=True)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error

    async def _tick(self) -> list[int]:
        self._seq += 1
        return [self._seq]

    async def _heartbeat(self, seq: int) -> None:
        facts = await self._engine.facts() if self.state == "ready" else None
        beat = Heartbeat(
            node_id=self.node_id,
            seq=seq,
            engine_state=self.state,
            requests_running=facts.requests_running if facts else 0.0,
            requests_waiting=facts.requests_waiting if facts else 0.0,
            kv_cache_usage=facts.kv_cache_usage if facts else 0.0,
        )
        await self._bus.publish(beat)
