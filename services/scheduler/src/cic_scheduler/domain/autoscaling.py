"""Autoscaling: target tracking on load, with delays against flapping.

Policies are chosen by name (``AUTOSCALERS``); each is a pure function of the
deployment's bounds, the load now, its memory of the last proposal, and ``now``:

- ``in_flight``: requests running + waiting per ready replica, toward ``target``.
- ``queue``: the same, a waiting request counting double (the batch is full already).
- ``requests_per_second``: finished requests per second per replica, toward
  ``target_rps`` (SkyServe's ``target_qps_per_replica``).
- ``latency``: p95 end-to-end latency held under ``target_p95``: above it, replicas
  grow in proportion to the excess; below it, the count follows ``in_flight``, so a
  deployment shrinks when the work in hand does, never on a latency dip alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["AUTOSCALERS", "AutoscalePolicy", "Load", "Proposal", "autoscale"]


@dataclass(frozen=True)
class AutoscalePolicy:
    name: str = "none"
    min_replicas: int = 1
    max_replicas: int = 1
    target: float = 8.0
    """Work in hand per ready replica the policy aims at (requests running + waiting)."""
    target_rps: float = 5.0
    """``requests_per_second``: finished requests per second per replica."""
    target_p95: float = 10.0
    """``latency``: seconds, end to end."""
    upscale_delay: timedelta = timedelta(seconds=30)
    downscale_delay: timedelta = timedelta(minutes=5)


@dataclass(frozen=True)
class Load:
    ready: int
    running: float
    waiting: float
    requests_per_second: float = 0.0
    latency_p95: float | None = None
    """Seconds; None while no request finished lately."""


@dataclass(frozen=True)
class Proposal:
    """What the policy wanted last, and since when: a change takes effect only once it
    has been wanted for the whole delay."""

    replicas: int
    since: datetime


Rule = Callable[[Load, AutoscalePolicy], float]


def _in_flight(load: Load, policy: AutoscalePolicy) -> float:
    return (load.running + load.waiting) / policy.target


def _queue(load: Load, policy: AutoscalePolicy) -> float:
    """Queued work weighs double: a queue means the batch is already full."""
    return (load.running + 2 * load.waiting) / policy.target


def _requests_per_second(load: Load, policy: AutoscalePolicy) -> float:
    return load.requests_per_second / policy.target_rps


def _latency(load: Load, policy: AutoscalePolicy) -> float:
    if load.latency_p95 is not None and load.latency_p95 > policy.target_p95 and load.ready:
        return load.ready * load.latency_p95 / policy.target_p95
    return _in_flight(load, policy)


AUTOSCALERS: dict[str, Rule | None] = {
    "none": None,
    "in_flight": _in_flight,
    "queue": _queue,
    "requests_per_second": _requests_per_second,
    "latency": _latency,
}
"""Policies by name; ``none`` keeps the count the operator set."""


def autoscale(
    current: int, load: Load, last: Proposal | None, now: datetime, policy: AutoscalePolicy
) -> tuple[int, Proposal | None]:
    """The replica count to hold now, and the proposal to remember.

    Raises:
        KeyError: ``policy.name`` is not in ``AUTOSCALERS``.
    """
    rule = AUTOSCALERS[policy.name]
    if rule is None:
        return current, None
    wanted = min(policy.max_replicas, max(policy.min_replicas, math.ceil(rule(load, policy))))
    if wanted == current:
        return current, None
    if last is None or last.replicas != wanted or (last.replicas > current) != (wanted > current):
        last = Proposal(wanted, now)
    delay = policy.upscale_delay if wanted > current else policy.downscale_delay
    if now - last.since >= delay:
        return wanted, None
    return current, last
