"""The event contract: subjects, envelopes, and what is poison."""

from __future__ import annotations

import json

import pytest
from cic_common.events import (
    EVENT_TYPES,
    MAX_EVENT_BYTES,
    DeploymentChanged,
    Heartbeat,
    LaunchRequested,
    NodeSpec,
    PoisonEvent,
    decode,
    encode,
)
from cic_common.streams import STREAMS, stream_for

LAUNCH = LaunchRequested(node_id="n0123456789ab", deployment_id="d1", spec=NodeSpec(model="m"))


def test_public_subjects_carry_the_contract_names() -> None:
    subjects = {t: cls.TYPE for t, cls in EVENT_TYPES.items()}
    for name in ("heartbeat", "termination-warning", "launch-requested", "node-ready"):
        assert name in subjects
    assert LAUNCH.subject() == "cic.launch-requested.n0123456789ab"
    assert DeploymentChanged(deployment_id="d9", generation=2).subject() == (
        "cic.deployment-changed.d9"
    )


def test_every_event_subject_is_held_by_exactly_one_stream() -> None:
    for event_type in EVENT_TYPES:
        subject = f"cic.{event_type}.x"
        holders = [
            s.name
            for s in STREAMS
            if any(subject.startswith(p.removesuffix(">")) for p in s.subjects)
        ]
        assert holders == [stream_for(subject)]


def test_an_encoded_event_decodes_to_the_same_payload() -> None:
    event_id, raw = encode(LAUNCH, producer="test")
    envelope, event = decode(raw, LaunchRequested)
    assert envelope.event_id == event_id
    assert envelope.producer == "test"
    assert envelope.schema_version == 1
    assert event == LAUNCH


def test_unknown_fields_are_ignored_so_old_consumers_keep_working() -> None:
    _, raw = encode(LAUNCH, producer="test")
    doc = json.loads(raw)
    doc["extra"] = 1
    doc["data"]["added_later"] = {"x": 1}
    _, event = decode(json.dumps(doc).encode(), LaunchRequested)
    assert event.node_id == LAUNCH.node_id


def _mutated(**changes: object) -> bytes:
    doc = json.loads(encode(LAUNCH, producer="test")[1])
    doc.update(changes)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not an event envelope"),
        (b"[]", "not an event envelope"),
        (_mutated(type="heartbeat"), "expected type 'launch-requested'"),
        (_mutated(schema_version=2), "unsupported schema_version 2"),
        (_mutated(data={"node_id": "n1"}), "invalid 'launch-requested' payload"),
        (_mutated(data={**LAUNCH.model_dump(mode="json"), "node_id": "../x"}), "node_id"),
        (b" " * (MAX_EVENT_BYTES + 1), "exceeds"),
    ],
)
def test_poison_is_recognised_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(PoisonEvent, match=reason.replace("(", r"\(")):
        decode(raw, LaunchRequested)


def test_heartbeat_rejects_a_kv_cache_usage_above_one() -> None:
    _, raw = encode(Heartbeat(node_id="n1"), producer="t")
    doc = json.loads(raw)
    doc["data"]["kv_cache_usage"] = 1.5
    with pytest.raises(PoisonEvent, match="kv_cache_usage"):
        decode(json.dumps(doc).encode(), Heartbeat)
