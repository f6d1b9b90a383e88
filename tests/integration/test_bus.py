"""The bus on a real NATS server: dead letters, bounded redelivery, de-duplication."""

from __future__ import annotations

import asyncio

from cic_common.bus import Bus
from cic_common.events import Envelope, LaunchRequested, NodeSpec, TerminateRequested
from cic_common.telemetry import inject_headers
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
