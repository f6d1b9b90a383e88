"""Poison on every subject of the contract goes to its dead-letter subject; consumers go on."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial

import nats.errors
import pytest
from chaos_harness import FIGURES, Scenario, agents_of
from cic_common.bus import Bus
from cic_common.events import EVENT_TYPES, MAX_EVENT_BYTES, Event, UsageRecorded
from conftest import Running
from event_faults import (
    PROBE_HEADER,
    ProbeNode,
    envelope_of,
    probe_event,
    probing,
    publish_raw,
    settled,
)
from support import dead_letters, eventually

pytestmark = pytest.mark.chaos

MODEL = "chaos-poison"
REASONS = {"malformed": "not an event envelope", "wrong version": "schema_version",
           "wrong type": "expected type", "oversized": "exceeds"}  # fmt: skip
"""Each poison, and what its dead letter's reason must name."""


@dataclass(frozen=True)
class Sent:
    subject: str
    kind: str
    probe: str
    seq: int

    @property
    def poison(self) -> bool:
        return self.kind in REASONS


def bodies(event_type: type[Event], node: ProbeNode) -> dict[str, bytes]:
    """Each poison of the contract's "Bad input", then two valid events: one with fields
    no consumer knows (the tolerant reader must take it) and a plain one."""
    others = list(EVENT_TYPES.values())
    other = others[(others.index(event_type) + 1) % len(others)]
    wrong_version = envelope_of(probe_event(event_type, node))
    wrong_version["schema_version"] = event_type.VERSION + 1
    oversized = envelope_of(probe_event(event_type, node))
    oversized["data"]["padding"] = "x" * MAX_EVENT_BYTES
    unknown = envelope_of(probe_event(event_type, node))
    unknown["chaos_trace"] = {"hops": [1, 2]}
    unknown["data"]["chaos_added_in_v1_1"] = "ignored by older readers"
    found = {
        "malformed": b'{"event_id": "x", "type": "' + event_type.TYPE.encode(),
        "wrong version": wrong_version,
        "wrong type": envelope_of(probe_event(other, node)),
        "oversized": oversized,
        "unknown fields": unknown,
        "valid": envelope_of(probe_event(event_type, node)),
    }
    return {k: v if isinstance(v, bytes) else json.dumps(v).encode() for k, v in found.items()}


async def test_poison_on_every_subject_is_dead_lettered_and_valid_events_still_handled(
    running: Running, bus: Bus
) -> None:
    services = running.platform.running()
    async with probing(running.admin, running.database, bus, MODEL) as probe:
        node, consumers = probe.node, probe.consumers
        sent: list[Sent] = []
        refused = 0
        for event_type in EVENT_TYPES.values():
            subject = probe_event(event_type, node).subject()
            for kind, body in bodies(event_type, node).items():
                probe_id, seq = await publish_raw(bus, subject, body, node)
                sent.append(Sent(subject, kind, probe_id, seq))
            # Above the server's max_payload the client refuses it before it leaves: the
            # stream's own limit (max_msg_size) is the same 1 MiB.
            with pytest.raises(nats.errors.MaxPayloadError):
                await publish_raw(bus, subject, b"x" * (bus.nc.max_payload + 1), node)
            refused += 1
        for name, durables in consumers.items():
            last = max(s.seq for s in sent if s.subject.startswith(f"cic.{name}."))
            await eventually(partial(settled, bus, durables, last))
        late = await probe.declared_late(bus)

        # Which consumer dead-lettered which message, and why.
        letters: dict[tuple[str, str], str] = {}
        for subject in sorted({s.subject for s in sent}):
            for _, headers in await dead_letters(bus, subject):
                key = (headers.get(PROBE_HEADER, "?"), headers["Cic-Dlq-Consumer"])
                letters[key] = headers["Cic-Dlq-Reason"]
        lost: list[str] = []
        for s in sent:
            for durable in consumers[s.subject.split(".")[1]]:
                reason = letters.get((s.probe, durable.name))
                if s.poison and (reason is None or REASONS[s.kind] not in reason):
                    lost.append(f"{s.kind} on {s.subject} not dead-lettered by {durable.name}")
                if not s.poison and reason is not None:
                    lost.append(
                        f"{s.kind} on {s.subject} dead-lettered by {durable.name}: {reason}"
                    )

        # The tolerant reader kept the data, not only the ack: the usage it carried is stored.
        usage = [s for s in sent if s.subject.startswith(f"cic.{UsageRecorded.TYPE}.")]
        stored = await probe.pool.fetchval(
            "SELECT count(*) FROM usage WHERE request_id LIKE 'chaos-%'"
        )
        probe_row = await probe.pool.fetchrow(
            "SELECT status, endpoint FROM nodes WHERE id = $1", node.node_id
        )

    deliveries = sum(len(consumers[s.subject.split(".")[1]]) for s in sent)
    FIGURES.record(Scenario(
        "duplicate and poison events: poison on every subject", events_published=len(sent),
        events_lost=len(lost),
        notes=f"{len(EVENT_TYPES)} subjects, {deliveries} deliveries checked, {refused} over"
              f" max_payload refused at publish; read by the test only: {', '.join(probe.unread)}",
    ))  # fmt: skip
    assert lost == []
    assert late == {}, "these consumers were declared after the test began"
    assert stored == len([s for s in usage if not s.poison])
    # The valid launch, ready and warning about the ended probe node moved nothing.
    assert dict(probe_row) == {"status": "terminated", "endpoint": None}
    assert agents_of(node.node_id) == []
    assert running.platform.running() == services  # no service crashed on the way
