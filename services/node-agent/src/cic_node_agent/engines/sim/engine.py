"""The simulated engine at run time: the batch, the modelled waits, and what they measure."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Any

from cic_node_agent.engines.sim.faults import FaultSwitch
from cic_node_agent.engines.sim.latency import LatencyModel
from cic_node_agent.engines.sim.metrics import Load
from cic_node_agent.engines.sim.protocol import sse
from cic_node_agent.engines.sim.replies import Reply

__all__ = ["SimEngine"]


class SimEngine:
    """Admits requests to a batch of ``max_num_seqs`` (the rest wait), then takes as long
    as the latency model says, slowed by the load and the ``slow`` fault.

    Each request is counted out of the batch however it ends; one that does not run to its
    end (the client left) counts as ``abort``.
    """

    def __init__(self, latency: LatencyModel, load: Load, switch: FaultSwitch) -> None:
        self.latency = latency
        self.load = load
        self.switch = switch

    async def _wait(self, seconds: float) -> None:
        """Sleeps ``seconds`` (if any), then stays put while the engine hangs."""
        if seconds > 0:
            await asyncio.sleep(seconds)
        if self.switch.faults.hang:
            await self.switch.hold()

    async def complete(self, reply: Reply, arrival: float) -> None:
        """A whole answer: waits until its last token would be generated."""
        load, latency, switch = self.load, self.latency, self.switch
        await load.enter(reply.prompt, arrival)
        done, first = False, arrival
        try:
            await self._wait(
                latency.time_to_first_token(reply.prompt, load.running, switch.slowdown)
            )
            first = time.perf_counter()
            steps = reply.steps
            await self._wait(latency.decode_time(steps, load.running, switch.slowdown))
            if steps > 1:
                load.itl.observe((time.perf_counter() - first) / (steps - 1), times=steps - 1)
            load.generation_tokens += reply.generated
            done = True
        finally:
            load.leave(aborted=not done)
        load.finish(reply.finish_reason, arrival=arrival, first=first, prompt=reply.prompt,
                    generated=reply.generated)  # fmt: skip

    async def embed(self, prompt: int, arrival: float) -> None:
        """An embedding: a prefill, no decode."""
        load = self.load
        await load.enter(prompt, arrival)
        done = False
        try:
            await self._wait(
                self.latency.time_to_first_token(prompt, load.running, self.switch.slowdown)
            )
            done = True
        finally:
            load.leave(aborted=not done)
        load.finish("stop", arrival=arrival, first=time.perf_counter(), prompt=prompt,
                    generated=0)  # fmt: skip

    async def stream(
        self, reply: Reply, arrival: float, include_usage: bool, running: bool = False
    ) -> AsyncGenerator[bytes, None]:
        """Server-sent events: the role (chat), tokens of every choice interleaved step by
        step, each choice's closing chunk, the usage if asked, then ``[DONE]``. With
        ``running``, each chunk carries the usage so far (as vLLM's
        ``continuous_usage_stats``)."""
        load, latency, switch = self.load, self.latency, self.switch
        extra: dict[str, Any] = {"usage": None} if include_usage else {}
        generated = 0
        answers = reply.answers
        await load.enter(reply.prompt, arrival)
        done = False
        try:
            if running:
                extra = {"usage": reply.usage(0)}
            if reply.chat:
                for index in range(len(answers)):
                    yield sse({**reply.chunk(index, "", role=True), **extra})
            first = last = arrival
            for step in range(reply.steps):
                if step == 0:
                    delay = latency.time_to_first_token(reply.prompt, load.running,
                                                        switch.slowdown)  # fmt: skip
                else:
                    delay = latency.inter_token(load.running, switch.slowdown)
                await self._wait(delay)
                tick = time.perf_counter()
                if step == 0:
                    first = tick
                else:
                    load.itl.observe(tick - last)
                last = tick
                for index, answer in enumerate(answers):
                    if step < answer.generated:
                        load.generation_tokens += 1
                        generated += 1
                        if running:
                            extra = {"usage": reply.usage(generated)}
                        if step < len(answer.pieces):
                            yield sse({**reply.chunk(index, answer.pieces[step]), **extra})
            if running:
                extra = {"usage": reply.usage()}
            for index, answer in enumerate(answers):
                closing = reply.chunk(index, None, finish=answer.finish_reason)
                yield sse({**closing, **extra})
            if include_usage:
                yield sse(reply.usage_chunk())
            done = True
        finally:
            load.leave(aborted=not done)
        load.finish(reply.finish_reason, arrival=arrival, first=first, prompt=reply.prompt,
                    generated=reply.generated)  # fmt: skip
        yield sse("[DONE]")  # counted out first: a client that saw it sees the metrics agree
