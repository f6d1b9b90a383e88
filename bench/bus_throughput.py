"""Events per second through the CIC consumer against a bare nats-py pull consumer.

Both read the same N events from a private JetStream server in the same run; the table
gives each rate and its ratio to the bare baseline (machines here are noisy: compare
ratios, not rates). Run: ``uv run python bench/bus_throughput.py [N]``.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from cic_common.bus import Bus, Consumer
from cic_common.events import Envelope, TerminateRequested, decode
from cic_common.streams import STREAMS
from cic_local.infra import PrivateNats
from nats.js.api import AckPolicy, ConsumerConfig


async def fill(bus: Bus, count: int) -> None:
    for spec in STREAMS:
        await bus.js.purge_stream(spec.name)
    await asyncio.gather(*(bus.publish(TerminateRequested(node_id=f"n{i}")) for i in range(count)))


async def bare(bus: Bus, count: int, batch: int) -> float:
    """Baseline: fetch a batch, decode each event, ack it."""
    name = f"bare{batch}"
    config = ConsumerConfig(durable_name=name, ack_policy=AckPolicy.EXPLICIT,
                            filter_subject="cic.terminate-requested.>")  # fmt: skip
    await bus.js.add_consumer("CIC_EVENTS", config)
    sub = await bus.js.pull_subscribe_bind(name, stream="CIC_EVENTS")
    started, seen = time.perf_counter(), 0
    while seen < count:
        for msg in await sub.fetch(batch, timeout=5):
            decode(msg.data, TerminateRequested)
            await msg.ack()
            seen += 1
    elapsed = time.perf_counter() - started
    await sub.unsubscribe()
    return count / elapsed


class Tally:
    """Counts handled events; ``done`` once ``count`` were."""

    def __init__(self, count: int) -> None:
        self.count, self.seen, self.done = count, 0, asyncio.Event()

    def add(self, n: int) -> None:
        self.seen += n
        if self.seen >= self.count:
            self.done.set()


async def rate(consumer: Consumer[TerminateRequested], tally: Tally) -> float:
    """Events per second ``consumer`` handles until ``tally`` is done."""
    started = time.perf_counter()
    task = asyncio.create_task(consumer.run())
    await tally.done.wait()
    elapsed = time.perf_counter() - started
    consumer.stop()
    await task
    return tally.count / elapsed


async def cic(bus: Bus, count: int, concurrency: int) -> float:
    tally = Tally(count)

    async def handler(event: TerminateRequested, envelope: Envelope) -> None:
        tally.add(1)

    return await rate(bus.consumer(TerminateRequested, f"cic{concurrency}", handler,
                                   concurrency=concurrency), tally)  # fmt: skip


async def cic_batches(bus: Bus, count: int, superseded: bool) -> float:
    """The batch consumer heartbeats use (``superseded``: no acks)."""
    tally = Tally(count)

    async def handler(events: list[tuple[TerminateRequested, Envelope]]) -> None:
        tally.add(len(events))

    name = f"cicbatch{int(superseded)}"
    consumer = bus.batch_consumer(TerminateRequested, name, handler, batch=256,
                                  superseded=superseded)  # fmt: skip
    return await rate(consumer, tally)


async def main(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = PrivateNats(Path(tmp))
        server.start()
        try:
            bus = await Bus.connect(server.url, producer="bench")
            rows = []
            for label, run in (
                ("bare pull, batch 16", lambda: bare(bus, count, 16)),
                ("cic consumer, concurrency 1", lambda: cic(bus, count, 1)),
                ("cic consumer, concurrency 16", lambda: cic(bus, count, 16)),
                ("cic batches of 256, acked", lambda: cic_batches(bus, count, False)),
                ("cic batches of 256, no acks", lambda: cic_batches(bus, count, True)),
            ):
                await fill(bus, count)
                rows.append((label, await run()))
            await bus.close()
        finally:
            server.stop()
    base = rows[0][1]
    print(f"{count} events, decoded and handled (acked unless said otherwise)\n")
    print(f"| {'consumer':30} | {'events/s':>9} | {'vs bare':>7} |")
    print(f"|{'-' * 32}|{'-' * 11}|{'-' * 9}|")
    for label, rate in rows:
        print(f"| {label:30} | {rate:9.0f} | {rate / base:7.2f} |")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000))
