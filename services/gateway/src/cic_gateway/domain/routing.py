"""Choosing the replica for a request: a pure function of the replica table."""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence

from cic_common.replicas import Replica

__all__ = ["choose_replica", "load_of"]


def load_of(replica: Replica) -> float:
    """Work in hand: running plus waiting requests (queued work weighs double)."""
    return replica.requests_running + 2.0 * replica.requests_waiting


def choose_replica(
    replicas: Sequence[Replica],
    exclude: Collection[str],
    rng: random.Random,
    in_flight: Mapping[str, int] | None = None,
) -> Replica | None:
    """Power of two choices over the routable replicas, skipping draining ones and
    ``exclude`` (node ids already tried); degraded replicas only when nothing else is
    left. Load is the replica's last reported work plus ``in_flight``, the requests
    this gateway has sent it since. None when no replica is left."""
    candidates = [r for r in replicas if not r.draining and r.node_id not in exclude]
    healthy = [r for r in candidates if not r.degraded]
    candidates = healthy or candidates
    if not candidates:
        return None
    if len(candidates) == 1:
        return candidates[0]
    a, b = rng.sample(candidates, 2)
    mine = in_flight or {}
    return a if load_of(a) + mine.get(a.node_id, 0) <= load_of(b) + mine.get(b.node_id, 0) else b
