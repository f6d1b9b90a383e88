"""Autoscaling: target tracking on work in hand, with delays against flapping.

Policies are chosen by name (``AUTOSCALERS``); each is a pure function of the
deployment's bounds, the load now, its memory of the last proposal, and ``now``.
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
    upscale_delay: timedelta = timedelta(seconds=30)
    downscale_delay: timedelta = timedelta(minutes=5)


@dataclass(frozen=True)
class Load:
    ready: int
    running: float
    waiting: float


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


AUTOSCALERS: dict[str, Rule | None] = {"none": None, "in_flight": _in_flight, "queue": _queue}
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
