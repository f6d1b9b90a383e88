"""The bus on a real NATS server: dead letters, bounded redelivery, de-duplication."""

from __future__ import annotations

import asyncio

from cic_common.bus import Bus
from cic_common.events import Envelope, LaunchRequested, NodeSpec, TerminateRequested
from cic_common.telemetry import inject_headers
from nats.js.errors import NotFoundError
from opentelemetry import context, propagate
from support import dead_letters, eventually


async def test_a_failing_handler_is_retried_then_dead_lettered(bus: Bus) -> None:
    calls: list[str] = []

    async def broken(event: TerminateRequested, envelope: Envelope) -> None:
        calls.append(envelope.event_id)
        raise RuntimeError("database down")

    consumer = bus.consumer(TerminateRequested, "test-broken", broken, max_deliver=2)
    task = asyncio.create_task(consumer.run())
    try:
        await bus.publish(TerminateRequested(node_id="nretry"))
        letters = await eventually(lambda: dead_letters(bus, "cic.terminate-requested.nretry"))
    finally:
        consumer.stop()
        await task
    assert len(calls) == 2
    assert len(set(calls)) == 1
    _, headers = letters[0]
    assert headers["Cic-Dlq-Reason"] == "RuntimeError: database down"
    assert headers["Cic-Dlq-Deliveries"] == "2"
    assert headers["Cic-Dlq-Consumer"] == "test-broken"


async def test_a_repeated_message_id_is_stored_once(bus: Bus) -> None:
    event = LaunchRequested(node_id="ndup", deployment_id="d1", spec=NodeSpec(model="m"))
    await bus.publish(event, msg_id="launch:ndup")
    await bus.publish(event, msg_id="launch:ndup")
    await bus.publish(event, msg_id="launch:ndup-other-intent")
    info = await bus.js.stream_info("CIC_EVENTS", subjects_filter="cic.launch-requested.ndup")
    assert info.state.messages == 2


async def test_a_handled_event_is_acknowledged_and_not_seen_again(bus: Bus) -> None:
    seen: list[str] = []

    async def record(event: TerminateRequested, envelope: Envelope) -> None:
        seen.append(event.node_id)

    consumer = bus.consumer(TerminateRequested, "test-ack", record)
    task = asyncio.create_task(consumer.run())
    try:
        await bus.publish(TerminateRequested(node_id="nack"))
        await eventually(lambda: asyncio.sleep(0, result=consumer.handled))
    finally:
        consumer.stop()
        await task
    info = await bus.js.consumer_info("CIC_EVENTS", "test-ack")
    assert seen == ["nack"]
    assert info.num_pending == 0
    assert info.num_ack_pending == 0


async def test_without_recorded_spans_the_trace_context_still_flows_through(bus: Bus) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    incoming = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    passed_on: list[dict[str, str]] = []

    async def handle(event: TerminateRequested, envelope: Envelope) -> None:
        passed_on.append(inject_headers({}))  # what a publish from here would carry

    consumer = bus.consumer(TerminateRequested, "test-trace", handle)
    task = asyncio.create_task(consumer.run())
    token = context.attach(propagate.extract(incoming))
    try:
        await bus.publish(TerminateRequested(node_id="ntrace"))
    finally:
        context.detach(token)
    try:
        await eventually(lambda: asyncio.sleep(0, result=passed_on))
    finally:
        consumer.stop()
        await task
    assert passed_on[0]["traceparent"].split("-")[1] == trace_id


async def test_a_lingering_consumer_takes_a_stream_in_batches_and_misses_none(bus: Bus) -> None:
    seen: list[str] = []

    async def record(event: TerminateRequested, envelope: Envelope) -> None:
        seen.append(event.node_id)

    consumer = bus.consumer(TerminateRequested, "test-linger", record, concurrency=8,
                            linger=0.05)  # fmt: skip
    task = asyncio.create_task(consumer.run())
    try:
        for i in range(30):
            await bus.publish(TerminateRequested(node_id=f"nlinger{i}"))
        await eventually(lambda: asyncio.sleep(0, result=len(seen) == 30))
    finally:
        consumer.stop()
        await task
    assert sorted(seen) == sorted(f"nlinger{i}" for i in range(30))
    info = await bus.js.consumer_info("CIC_EVENTS", "test-linger")
    assert info.num_pending + info.num_ack_pending == 0


async def test_a_batch_consumer_hands_over_each_fetch_at_once_and_dead_letters_poison(
    bus: Bus,
) -> None:
    batches: list[list[str]] = []

    async def record(events: list[tuple[TerminateRequested, Envelope]]) -> None:
        batches.append([event.node_id for event, _ in events])

    consumer = bus.batch_consumer(TerminateRequested, "test-batch", record, batch=64,
                                  linger=0.05)  # fmt: skip
    for i in range(20):
        await bus.publish(TerminateRequested(node_id=f"nbatch{i}"))
    await bus.js.publish("cic.terminate-requested.nbatchbad", b"not json")
    task = asyncio.create_task(consumer.run())
    try:
        await eventually(lambda: asyncio.sleep(0, result=consumer.handled == 20))
        letters = await eventually(lambda: dead_letters(bus, "cic.terminate-requested.nbatchbad"))
    finally:
        consumer.stop()
        await task
    assert sorted(n for batch in batches for n in batch) == sorted(f"nbatch{i}" for i in range(20))
    assert len(batches) < 20  # taken together, not one by one
    assert letters[0][1]["Cic-Dlq-Consumer"] == "test-batch"
    info = await bus.js.consumer_info("CIC_EVENTS", "test-batch")
    assert info.num_pending + info.num_ack_pending == 0


async def test_an_event_its_handler_cannot_take_does_not_take_its_batch_with_it(
    bus: Bus,
) -> None:
    stored: list[str] = []

    async def store(events: list[tuple[TerminateRequested, Envelope]]) -> None:
        if any(event.node_id == "nbatchfk" for event, _ in events):
            raise ValueError("violates a foreign key")  # as one row would fail an INSERT
        stored.extend(event.node_id for event, _ in events)

    consumer = bus.batch_consumer(TerminateRequested, "test-batch-alone", store, batch=64,
                                  linger=0.05, max_deliver=2)  # fmt: skip
    for i in range(10):
        await bus.publish(TerminateRequested(node_id=f"nbatchok{i}"))
    await bus.publish(TerminateRequested(node_id="nbatchfk"))
    task = asyncio.create_task(consumer.run())
    try:
        letters = await eventually(lambda: dead_letters(bus, "cic.terminate-requested.nbatchfk"))
    finally:
        consumer.stop()
        await task
    assert sorted(stored) == sorted(f"nbatchok{i}" for i in range(10))  # each once
    assert len(letters) == 1
    assert consumer.dead_lettered == 1


async def test_a_failed_superseded_event_is_dropped_not_redelivered(bus: Bus) -> None:
    calls: list[str] = []

    async def broken(events: list[tuple[TerminateRequested, Envelope]]) -> None:
        calls.extend(event.node_id for event, _ in events)
        raise RuntimeError("redis down")

    async def created() -> bool:
        try:
            await bus.js.consumer_info("CIC_EVENTS", "test-superseded")
        except NotFoundError:
            return False
        return True

    consumer = bus.batch_consumer(TerminateRequested, "test-superseded", broken,
                                  deliver_new=True, superseded=True)  # fmt: skip
    task = asyncio.create_task(consumer.run())
    try:
        await eventually(created)
        await bus.publish(TerminateRequested(node_id="nsuperseded"))
        await eventually(lambda: asyncio.sleep(0, result=calls))
        await asyncio.sleep(2.5)  # a redelivery (after 1 s with acks) would come by now
    finally:
        consumer.stop()
        await task
    assert calls == ["nsuperseded"]
    info = await bus.js.consumer_info("CIC_EVENTS", "test-superseded")
    assert info.config.ack_policy == "none"
    assert info.num_pending == 0
