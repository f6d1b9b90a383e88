"""The bus on a real NATS server: dead letters, bounded redelivery, de-duplication."""

from __future__ import annotations

import asyncio

from cic_common.bus import Bus
from cic_common.events import Envelope, LaunchRequested, NodeSpec, TerminateRequested
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
