"""The node agent's work: keep the engine up, announce it, heartbeat, and drain it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Literal

from cic_common.bus import Publisher
from cic_common.events import GpuFacts, Heartbeat, NodeReady, TerminationWarning
from cic_common.loops import Loop

from cic_node_agent.adapters.engine import EngineExited, EngineProcess
from cic_node_agent.domain.metrics import EngineFacts, Rates, rates
from cic_node_agent.domain.notices import Notice

__all__ = ["NodeAgent"]

log = logging.getLogger(__name__)

EngineState = Literal["starting", "ready", "restarting", "failed", "stopping"]
GpuReader = Callable[[], Awaitable[tuple[GpuFacts, ...]]]


async def _no_gpus() -> tuple[GpuFacts, ...]:
    return ()


class NodeAgent:
    """Supervises the engine and speaks for the node.

    ``node-ready`` goes out each time the engine (re)starts answering; heartbeats go
    out every ``heartbeat_interval`` whatever the engine's state, so a crash loop is
    reported (``engine_state="failed"``) rather than hidden by silence.

    Stopping is always a drain: on SIGTERM (``stop``) or a preemption ``notice`` the
    engine takes no restart, in-flight requests get until the deadline (or until the
    engine is idle), then the engine is stopped cleanly. After a notice the agent stays
    up, heartbeating ``stopping``, until the cloud takes the machine or it is stopped.
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
        drain_timeout: float = 30.0,
        read_gpus: GpuReader = _no_gpus,
    ) -> None:
        self.node_id = node_id
        self._model = model
        self._engine = engine
        self._bus = bus
        self._advertise_url = advertise_url
        self._ready_timeout = ready_timeout
        self._restart_limit = restart_limit
        self._drain_timeout = timedelta(seconds=drain_timeout)
        self._read_gpus = read_gpus
        self.state: EngineState = "starting"
        self.restarts = 0
        self.rebalance_recommended = False
        self.deadline: datetime | None = None
        self._seq = 0
        self._last_reading: tuple[float, EngineFacts] | None = None
        self._stop_requested = asyncio.Event()
        self._leaving = asyncio.Event()
        self.heartbeats = Loop(
            "heartbeat", self._tick, self._heartbeat, interval=heartbeat_interval
        )

    async def run(self) -> None:
        beating = asyncio.create_task(self.heartbeats.run())
        try:
            await self._supervise()
            self.state = "stopping"
            self.heartbeats.wake()
            deadline = self.deadline or datetime.now(UTC) + self._drain_timeout
            await self._drain(deadline)
            await self._stop_requested.wait()
        finally:
            self.state = "stopping"
            self.heartbeats.stop()
            await self._engine.stop()
            await beating

    def recommend_rebalance(self) -> None:
        """An early signal (AWS): reported in heartbeats for the scheduler to weigh."""
        self.rebalance_recommended = True

    def stop(self) -> None:
        """SIGTERM: drain, then exit."""
        self._stop_requested.set()
        self._leaving.set()

    async def on_notice(self, notice: Notice) -> None:
        """The cloud will take this node: warn the control plane, then drain. Only the
        first notice counts; the cloud repeats itself until the end."""
        if self.deadline is not None:
            return
        self.deadline = notice.deadline
        warning = TerminationWarning(node_id=self.node_id, deadline=notice.deadline,
                                     source=notice.source)  # fmt: skip
        await self._bus.publish(warning, msg_id=f"warning:{self.node_id}")
        log.warning("preemption notice", extra={"deadline": notice.deadline.isoformat()})
        self._leaving.set()

    async def _drain(self, deadline: datetime) -> None:
        """Until the engine is idle or ``deadline`` is near, whichever comes first."""
        margin = timedelta(seconds=2)
        while datetime.now(UTC) < deadline - margin and self._engine.returncode is None:
            facts = await self._engine.facts()
            if facts is not None and facts.requests_running + facts.requests_waiting == 0:
                break
            await asyncio.sleep(0.25)
        left = (deadline - datetime.now(UTC)).total_seconds()
        await self._engine.stop(grace=max(1.0, min(left, 10.0)))
        log.info("engine drained and stopped")

    async def _supervise(self) -> None:
        while not self._leaving.is_set():
            await self._engine.start()
            try:
                await self._until_leaving(self._engine.wait_ready(self._ready_timeout))
            except (EngineExited, TimeoutError) as exc:
                log.warning("engine did not become ready", extra={"error": str(exc)})
            else:
                if self._leaving.is_set():
                    return
                self.state = "ready"
                ready = NodeReady(node_id=self.node_id, endpoint=self._advertise_url,
                                  model=self._model)  # fmt: skip
                await self._bus.publish(ready, msg_id=f"ready:{self.node_id}:{self.restarts}")
                self.heartbeats.wake()
                await self._until_leaving(self._engine.wait())
            if self._leaving.is_set():
                return
            await self._engine.stop()
            self.restarts += 1
            if self.restarts > self._restart_limit:
                self.state = "failed"
                log.error("engine keeps failing; giving up", extra={"restarts": self.restarts})
                self.heartbeats.wake()
                await self._leaving.wait()
                return
            self.state = "restarting"
            self.heartbeats.wake()
            backoff = min(30.0, 0.5 * 2**self.restarts)
            log.warning("engine exited; restarting", extra={"in_seconds": backoff})
            await self._until_leaving(asyncio.sleep(backoff))

    async def _until_leaving(self, work: Awaitable[object]) -> None:
        """Await ``work`` unless the agent starts leaving first (then cancel it)."""
        task = asyncio.ensure_future(work)
        leaving = asyncio.create_task(self._leaving.wait())
        await asyncio.wait({task, leaving}, return_when=asyncio.FIRST_COMPLETED)
        leaving.cancel()
        task.cancel()
        await asyncio.gather(task, leaving, return_exceptions=True)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error

    async def _tick(self) -> list[int]:
        self._seq += 1
        return [self._seq]

    async def _heartbeat(self, seq: int) -> None:
        facts = await self._engine.facts() if self.state in ("ready", "stopping") else None
        moved = Rates()
        if facts is not None:
            reading = (time.monotonic(), facts)
            moved = rates(self._last_reading, reading)
            self._last_reading = reading
        beat = Heartbeat(
            node_id=self.node_id,
            seq=seq,
            engine_state=self.state,
            requests_running=facts.requests_running if facts else 0.0,
            requests_waiting=facts.requests_waiting if facts else 0.0,
            kv_cache_usage=facts.kv_cache_usage if facts else 0.0,
            tokens_per_second=moved.tokens_per_second,
            requests_per_second=moved.requests_per_second,
            latency_p95=moved.latency_p95,
            rebalance_recommended=self.rebalance_recommended,
            gpus=await self._read_gpus(),
        )
        await self._bus.publish(beat)
