"""Writes gathered per loop turn: one send for all the writes of a turn, in order, and
nothing lost or sent after a close."""

from __future__ import annotations

import asyncio
from typing import cast

from cic_common.coalesce import Coalescing


class Recorder:
    """What a transport was asked to send, write by write."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        assert not self.closing, "written after close"
        self.sent.append(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def wrap(recorder: Recorder) -> Coalescing:
    return Coalescing(cast(asyncio.Transport, recorder), asyncio.get_running_loop())


async def test_the_writes_of_one_turn_leave_in_one_send_in_order() -> None:
    recorder = Recorder()
    transport = wrap(recorder)
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"")
    transport.write(bytearray(b"body"))
    assert recorder.sent == []  # not before the turn ends
    assert transport.get_write_buffer_size() == 23
    await asyncio.sleep(0)
    assert recorder.sent == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    transport.write(b"next")
    await asyncio.sleep(0)
    assert recorder.sent[1:] == [b"next"]


async def test_a_close_sends_what_was_written_first_and_later_writes_are_dropped() -> None:
    recorder = Recorder()
    transport = wrap(recorder)
    transport.writelines([b"a", b"b"])
    transport.close()
    assert recorder.sent == [b"ab"]
    assert recorder.closing
    transport.write(b"late")
    await asyncio.sleep(0)
    assert recorder.sent == [b"ab"]
    assert transport.get_extra_info("peername") == "info:peername"


async def test_a_write_now_leaves_at_once_after_what_was_gathered_before_it() -> None:
    recorder = Recorder()
    transport = wrap(recorder)
    transport.write_now(b"whole answer")
    assert recorder.sent == [b"whole answer"]  # not held to the turn's end
    transport.write(b"head ")
    transport.write_now(b"body")
    assert recorder.sent == [b"whole answer", b"head body"]  # in order, one send
    await asyncio.sleep(0)
    assert len(recorder.sent) == 2  # nothing left to flush
    transport.close()
    transport.write_now(b"late")
    assert recorder.sent == [b"whole answer", b"head body"]
