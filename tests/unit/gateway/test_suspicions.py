"""Reports of failing replicas to health: one per replica per period from an instance,
sent off the request path, and a bus that refuses them costs nothing but a log line."""

from __future__ import annotations

import pytest
from cic_common.events import Event, ReplicaSuspected
from cic_gateway.adapters.suspects import Suspicions


class Published:
    """An in-memory bus: what was published, or a refusal."""

    def __init__(self, refuse: bool = False) -> None:
        self.events: list[Event] = []
        self.refuse = refuse

    async def publish(self, event: Event, *, msg_id: str | None = None) -> str:
        if self.refuse:
            raise ConnectionError("no NATS")
        self.events.append(event)
        return "id"


async def test_each_replica_is_reported_once_a_period() -> None:
    bus, now = Published(), [100.0]
    reports = Suspicions(bus, "gw-1", every=10.0, clock=lambda: now[0])
    for _ in range(50):
        reports.report("n1", "connection refused")
    reports.report("n2", "replica answered 502")
    now[0] = 109.9
    reports.report("n1", "connection refused")
    await reports.drain()
    assert [(e.node_id, e.reason) for e in bus.events if isinstance(e, ReplicaSuspected)] == [
        ("n1", "connection refused"), ("n2", "replica answered 502"),
    ]  # fmt: skip
    now[0] = 110.0
    reports.report("n1", "reset")
    await reports.drain()
    assert len(bus.events) == 3
    assert reports.sent == 3


async def test_a_refused_report_is_logged_and_never_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reports = Suspicions(Published(refuse=True), "gw-1")
    reports.report("n1", "reset")
    await reports.drain()
    assert reports.sent == 0
    assert "could not report a failing replica" in caplog.text
