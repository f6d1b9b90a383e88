"""Every subject fuzzed with hypothesis-generated junk: dead-lettered, and consumers go on."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC
from functools import partial
from typing import Any

import pytest
from chaos_harness import FIGURES, Scenario
from cic_common.bus import Bus
from cic_common.events import EVENT_TYPES, Event, PoisonEvent, decode, encode
from conftest import Running
from event_faults import (
    PROBE_HEADER,
    Durable,
    ProbeNode,
    probe_event,
    probing,
    publish_raw,
    settled,
)
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from nats.aio.msg import Msg
from support import dead_letters, eventually

pytestmark = pytest.mark.chaos

MODEL = "chaos-fuzz"
EXAMPLES = 30
"""Per subject: enough to reach every check of ``decode``, few enough for two cores."""


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    _containers,
    max_leaves=10,
)
"""Any JSON value (floats include NaN and infinities, which JSON itself has not)."""


def is_poison(raw: bytes, event_type: type[Event]) -> bool:
    """What the consumers themselves decide first: an event that decodes is not junk."""
    try:
        decode(raw, event_type)
    except PoisonEvent:
        return True
    return False


def junk(event_type: type[Event]) -> st.SearchStrategy[bytes]:
    """Bytes, JSON values, and envelopes as good as right but for the type, the version or
    the payload (its fields by name, with random values): the nearer right, the deeper
    into the consumer it goes before it is refused."""
    names = st.sampled_from(sorted(event_type.model_fields)) | st.text(max_size=8)
    envelopes = st.fixed_dictionaries({
        "event_id": st.text(min_size=1, max_size=64),
        "type": st.just(event_type.TYPE) | st.sampled_from(sorted(EVENT_TYPES)) | st.text(),
        "schema_version": st.just(event_type.VERSION) | st.integers(-1, 3),
        "occurred_at": st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
        "producer": st.text(max_size=12),
        "data": st.dictionaries(names, JSON, max_size=len(event_type.model_fields) + 1),
    })  # fmt: skip
    as_json = (JSON | envelopes).map(lambda v: json.dumps(v).encode())
    return (st.binary(max_size=300) | as_json).filter(partial(is_poison, event_type=event_type))


@dataclass
class Letters:
    """Dead letters as they arrive: the consumers that dead-lettered each probe."""

    by_probe: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    async def arrived(self, msg: Msg) -> None:
        headers = msg.headers or {}
        self.by_probe[headers.get(PROBE_HEADER, "?")].add(headers.get("Cic-Dlq-Consumer", "?"))


@dataclass
class Tally:
    junk: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    """The probe ids of the junk published, by subject."""
    valid: dict[str, str] = field(default_factory=dict)
    """The probe id of the valid event published after the junk, by subject."""
    lost: list[str] = field(default_factory=list)

    @property
    def published(self) -> int:
        return sum(map(len, self.junk.values())) + len(self.valid)


async def dead_lettered_by_all(
    bus: Bus, node: ProbeNode, subject: str, durables: list[Durable], letters: Letters,
    tally: Tally, raw: bytes,
) -> None:  # fmt: skip
    """One example: ``raw`` on ``subject`` reaches the dead-letter subject from each of
    its consumers."""
    probe, _ = await publish_raw(bus, subject, raw, node)
    tally.junk[subject].append(probe)
    everyone = {d.name for d in durables}

    async def all_letters() -> bool:
        return letters.by_probe[probe] >= everyone

    try:
        await eventually(all_letters, within=30, every=0.02)
    except AssertionError:
        tally.lost.append(f"{subject}: {raw[:80]!r} dead-lettered by {letters.by_probe[probe]}")
        raise


def fuzz(
    loop: asyncio.AbstractEventLoop,
    event_type: type[Event],
    example: Callable[[bytes], Coroutine[Any, Any, None]],
) -> None:
    """Hypothesis runs here, in a worker thread; each example runs on the test's loop.
    No shrinking: each step would be a round trip through the platform."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=list(HealthCheck),
    )
    @given(raw=junk(event_type))
    def every_junk_is_dead_lettered(raw: bytes) -> None:
        asyncio.run_coroutine_threadsafe(example(raw), loop).result()

    every_junk_is_dead_lettered()


async def test_junk_on_every_subject_is_dead_lettered_and_valid_events_still_handled(
    running: Running, bus: Bus
) -> None:
    services = running.platform.running()
    letters, tally = Letters(), Tally()
    watching = await bus.nc.subscribe("dlq.>", cb=letters.arrived)
    loop = asyncio.get_running_loop()
    try:
        async with probing(running.admin, running.database, bus, MODEL) as probe:
            node = probe.node
            for name, event_type in EVENT_TYPES.items():
                durables = probe.consumers[name]
                subject = probe_event(event_type, node).subject()
                example = partial(dead_lettered_by_all, bus, node, subject, durables, letters,
                                  tally)  # fmt: skip
                await asyncio.to_thread(fuzz, loop, event_type, example)
                # After the junk, a valid event is still taken.
                body = encode(probe_event(event_type, node), producer="chaos")[1]
                tally.valid[subject], seq = await publish_raw(bus, subject, body, node)
                await eventually(partial(settled, bus, durables, seq))
            late = await probe.declared_late(bus)
        # What the dead-letter stream kept, not only what went by.
        for subject, probes in tally.junk.items():
            kept = {h.get(PROBE_HEADER) for _, h in await dead_letters(bus, subject)}
            tally.lost += [f"junk {p} on {subject} not kept" for p in probes if p not in kept]
            if tally.valid[subject] in kept:
                tally.lost.append(f"the valid event on {subject} was dead-lettered")
    finally:
        await watching.unsubscribe()
        FIGURES.record(Scenario(
            "duplicate and poison events: hypothesis junk on every subject",
            events_published=tally.published, events_lost=len(tally.lost),
            notes=f"{len(tally.junk)} subjects, {EXAMPLES} examples and a valid event each",
        ))  # fmt: skip
    assert tally.lost == []
    assert late == {}, "these consumers were declared after the test began"
    assert running.platform.running() == services  # no service crashed on the way
