"""Choosing the replica for a request: pure functions of the replica table and of what
this instance has in flight, under a policy chosen by name.

- ``least_load`` (default): power of two choices, the less loaded of two at random.
- ``round_robin``: each replica in turn.
- ``session``: the same session (a header or the request's ``user``) to the same replica.
- ``prefix``: the same leading prompt to the same replica, whose prefix cache holds it.

The two affinity policies use rendezvous hashing: a replica that leaves moves only its
own share of the keys, and failover falls through to each key's next-best replica.
``prefix`` also gives way to load: a replica more than ``spill_after`` requests busier
than the least loaded is passed over (one popular system prompt must not pin a fleet's
traffic on one replica), as is ``session``'s for a replica far beyond the rest.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from cic_common.replicas import Replica

__all__ = [
    "POLICIES",
    "Affinity",
    "LeastLoad",
    "Policy",
    "RendezvousAffinity",
    "RoundRobin",
    "affinity_key",
    "candidates_of",
    "choose_replica",
    "load_of",
    "policy_named",
]

Affinity = Literal["session", "prefix"]


def load_of(replica: Replica, in_flight: Mapping[str, int]) -> float:
    """Work in hand: running plus waiting requests (queued work weighs double), plus the
    requests this instance has sent it since its last report."""
    return (
        replica.requests_running
        + 2.0 * replica.requests_waiting
        + in_flight.get(replica.node_id, 0)
    )


class Policy(Protocol):
    affinity: Affinity | None
    """What key the request must carry for this policy, if any."""

    def pick(
        self, candidates: Sequence[Replica], in_flight: Mapping[str, int], key: str | None
    ) -> Replica: ...


@dataclass
class LeastLoad:
    rng: random.Random = field(default_factory=random.Random)
    affinity: Affinity | None = None

    def pick(
        self, candidates: Sequence[Replica], in_flight: Mapping[str, int], key: str | None
    ) -> Replica:
        if len(candidates) == 1:
            return candidates[0]
        a, b = self.rng.sample(list(candidates), 2)
        return a if load_of(a, in_flight) <= load_of(b, in_flight) else b


@dataclass
class RoundRobin:
    affinity: Affinity | None = None
    _turn: itertools.count[int] = field(default_factory=itertools.count)

    def pick(
        self, candidates: Sequence[Replica], in_flight: Mapping[str, int], key: str | None
    ) -> Replica:
        ordered = sorted(candidates, key=lambda r: r.node_id)
        return ordered[next(self._turn) % len(ordered)]


@dataclass
class RendezvousAffinity:
    """The replica with the highest hash of (key, node id); keyless requests by load."""

    affinity: Affinity | None
    spill_after: float
    fallback: LeastLoad = field(default_factory=LeastLoad)

    def pick(
        self, candidates: Sequence[Replica], in_flight: Mapping[str, int], key: str | None
    ) -> Replica:
        if key is None:
            return self.fallback.pick(candidates, in_flight, None)
        seed = key.encode() + b"|"
        lightest = min(load_of(r, in_flight) for r in candidates)
        return max(
            (r for r in candidates if load_of(r, in_flight) - lightest <= self.spill_after),
            key=lambda r: _score(seed, r.node_id),
        )


def _score(seed: bytes, node_id: str) -> bytes:
    """The same on every gateway instance (unlike ``hash``, which is salted per process)."""
    return hashlib.blake2b(seed + node_id.encode(), digest_size=8).digest()


POLICIES = ("least_load", "round_robin", "session", "prefix")


def policy_named(name: str, rng: random.Random | None = None) -> Policy:
    """A fresh policy by its name (one of ``POLICIES``)."""
    least = LeastLoad(rng or random.Random())
    if name == "least_load":
        return least
    if name == "round_robin":
        return RoundRobin()
    if name == "session":
        return RendezvousAffinity("session", spill_after=64.0, fallback=least)
    if name == "prefix":
        return RendezvousAffinity("prefix", spill_after=8.0, fallback=least)
    raise ValueError(f"unknown routing policy {name!r}; one of {', '.join(POLICIES)}")


def candidates_of(replicas: Sequence[Replica], exclude: Collection[str]) -> list[Replica]:
    """The replicas a request may go to: not draining, not tried yet; degraded ones only
    when nothing else is left."""
    candidates = [r for r in replicas if not r.draining and r.node_id not in exclude]
    healthy = [r for r in candidates if not r.degraded]
    return healthy or candidates


def choose_replica(
    replicas: Sequence[Replica],
    exclude: Collection[str],
    policy: Policy,
    in_flight: Mapping[str, int],
    key: str | None = None,
) -> Replica | None:
    """The replica for a request under ``policy``, or None when no replica is left."""
    candidates = candidates_of(replicas, exclude)
    if not candidates:
        return None
    return policy.pick(candidates, in_flight, key)


def affinity_key(
    affinity: Affinity | None, body: Mapping[str, Any], session: str | None, prefix_chars: int
) -> str | None:
    """The key an affinity policy routes ``body`` by: for ``session``, the session header
    or else the request's ``user``; for ``prefix``, the first ``prefix_chars`` characters
    of the prompt as the engine would see it (a chat's messages in order). None: no key,
    route by load."""
    if affinity == "session":
        user = body.get("user")
        return session or (user if isinstance(user, str) and user else None)
    if affinity != "prefix":
        return None
    prompt = body.get("prompt", body.get("messages"))
    if isinstance(prompt, str):
        return prompt[:prefix_chars] or None
    if not isinstance(prompt, list) or not prompt:
        return None
    text = ""
    for part in prompt:
        if isinstance(part, dict):
            part = f"{part.get('role')}:{part.get('content')}\n"
        text += part if isinstance(part, str) else repr(part)
        if len(text) >= prefix_chars:
            break
    return text[:prefix_chars]
