"""Identifiers: short, URL-safe, and valid inside NATS subjects and cluster names."""

from __future__ import annotations

import itertools
import os
import secrets

__all__ = ["new_deployment_id", "new_event_id", "new_node_id", "new_request_id"]


def _token(nbytes: int) -> str:
    return secrets.token_hex(nbytes)


def new_node_id() -> str:
    """A node id: ``n`` plus 12 hex digits (lower case, fits SkyPilot cluster names)."""
    return "n" + _token(6)


def new_deployment_id() -> str:
    """A deployment id: ``d`` plus 12 hex digits."""
    return "d" + _token(6)


def new_event_id() -> str:
    """An event id, unique per emitted event; also the default ``Nats-Msg-Id``."""
    return _token(16)


class _Sequence:
    """Ids drawn from a random prefix per process and a counter: as unique as random
    ones, without a system call for randomness on every request (a new prefix in a
    forked child, and after 2**32 ids)."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.prefix = _token(8)
        self.counter = itertools.count()

    def next(self) -> str:
        n = next(self.counter)
        if n >= 1 << 32:
            self.reseed()
            n = next(self.counter)
        return f"{self.prefix}{n:08x}"


_REQUESTS = _Sequence()


def new_request_id() -> str:
    """A request id the gateway gives each API request: ``req-`` plus 24 hex digits."""
    return "req-" + _REQUESTS.next()
