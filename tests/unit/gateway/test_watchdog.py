"""The watchdog: probes only the replicas that keep a try waiting, abandons only the
tries of a replica that fails its probe, and survives tries that ended meanwhile."""

from __future__ import annotations

import asyncio

import pytest
from cic_gateway.adapters.http1 import Disconnected, Exchange, Expired
from cic_gateway.adapters.watchdog import Watchdog


class Probes:
    """A stand-in for the health checks: which replicas answer, and who was asked."""

    def __init__(self, dead: set[str], gate: asyncio.Event | None = None) -> None:
        self.dead = dead
        self.asked: list[str] = []
        self.gate = gate

    async def __call__(self, endpoint: str) -> bool:
        self.asked.append(endpoint)
        if self.gate is not None:
            await self.gate.wait()
        return endpoint not in self.dead


async def test_only_a_replica_that_fails_its_probe_loses_its_waiting_tries() -> None:
    stalled: list[str] = []
    probes = Probes(dead={"http://b"})
    dog = Watchdog(probes, probe_after=2.0, on_stalled=stalled.append)
    slow_ok = dog.watch("a", "http://a")
    hung = dog.watch("b", "http://b")
    fresh = dog.watch("c", "http://c")
    slow_ok.progress = hung.progress = 100.0
    fresh.progress = 101.5
    await dog.check(now=102.0)
    assert sorted(probes.asked) == ["http://a", "http://b"]  # c waited under 2 s
    assert (slow_ok.abandoned, hung.abandoned, fresh.abandoned) == (False, True, False)
    assert stalled == ["b"]


async def test_a_try_that_ends_while_its_probe_is_out_is_left_alone() -> None:
    gate = asyncio.Event()
    dog = Watchdog(Probes(dead={"http://b"}, gate=gate), probe_after=1.0)
    ended = dog.watch("b", "http://b")
    ended.progress = 0.0
    ended.exchange = Exchange()
    checking = asyncio.create_task(dog.check(now=5.0))
    await asyncio.sleep(0)
    dog.done(ended)
    gate.set()
    await checking
    assert not ended.abandoned
    assert not ended.exchange.aborted
    assert dog.abandoned == 0


async def test_abandoning_a_finished_wait_does_not_break_the_round() -> None:
    dog = Watchdog(Probes(dead={"http://b"}), probe_after=1.0)
    first, second = dog.watch("b", "http://b"), dog.watch("b", "http://b")
    first.progress = second.progress = 0.0
    first.exchange, second.exchange = Exchange(), Exchange()
    first.exchange.release()  # over already: aborting it must not raise
    await dog.check(now=5.0)
    assert first.abandoned
    assert second.abandoned
    assert dog.abandoned == 2
    with pytest.raises(Disconnected, match="aborted"):  # its reader wakes at once
        await second.exchange.read()


async def test_a_try_whose_time_is_up_ends_as_expired_without_a_probe() -> None:
    probes = Probes(dead=set())
    dog = Watchdog(probes, probe_after=100.0)
    late, fine = dog.watch("a", "http://a", deadline=10.0), dog.watch("a", "http://a", 20.0)
    late.exchange, fine.exchange = Exchange(), Exchange()
    await dog.check(now=10.0)
    assert probes.asked == []  # nothing waited probe_after: no probe
    assert (late.abandoned, fine.abandoned) == (False, False)  # not the replica's fault
    with pytest.raises(Expired):
        await late.exchange.read()
    assert not fine.exchange.aborted
