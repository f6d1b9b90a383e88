"""Request ids: unique, of one shape, and not repeated by a forked child."""

from __future__ import annotations

import os
import re

from cic_common.ids import new_request_id


def test_request_ids_are_unique_and_shaped_alike() -> None:
    ids = [new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"req-[0-9a-f]{24}", i) for i in ids)


def test_a_forked_child_draws_ids_of_its_own() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, to the parent
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.waitpid(pid, 0)
    mine = new_request_id()
    assert child != mine
    assert child[4:20] != mine[4:20]  # not the parent's sequence, a prefix of its own
