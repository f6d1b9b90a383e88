"""Identifiers: short, URL-safe, and valid inside NATS subjects and cluster names."""

from __future__ import annotations

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


def new_request_id() -> str:
    """A request id the gateway gives each API request: ``req-`` plus 24 hex digits."""
    return "req-" + _token(12)
