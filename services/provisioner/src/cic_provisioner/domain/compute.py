"""What a compute backend is: the contract every way of running a node fulfils."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from cic_common.events import NodeSpec

__all__ = [
    "CLUSTER_PREFIX",
    "Cluster",
    "ComputeBackend",
    "LaunchError",
    "cluster_name",
    "launch_plan",
    "node_id_of",
]

CLUSTER_PREFIX = "cic-"
_UNSAFE = re.compile(r"[^a-z0-9-]+")
_MAX_NAME = 63
"""SkyPilot names must be valid cloud resource names: lower case, digits and dashes."""


class LaunchError(Exception):
    """The backend could not create the node; ``retryable`` says whether to try again,
    ``reason_class`` what kind of failure it was (see ``domain.failures``)."""

    def __init__(
        self, message: str, *, retryable: bool = True, reason_class: str = "internal"
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.reason_class = reason_class


@dataclass(frozen=True)
class Cluster:
    """One node as its backend sees it."""

    name: str
    node_id: str
    backend: str
    launched_at: datetime
    pid: int | None = None
    """The agent's process, for the local backend."""
    endpoint: str | None = None
    """The engine's address, when the backend knows it at launch."""
    status: str = "UP"
    """As the backend reports it (SkyPilot: INIT, UP, STOPPED)."""


class ComputeBackend(Protocol):
    """Creates, lists and destroys one-node clusters.

    Every method is idempotent by node id: launching a node that already runs returns
    the running cluster, terminating a node that is gone succeeds.
    """

    name: str

    def cluster_name(self, node_id: str, spec: NodeSpec) -> str:
        """The name the node's cluster gets.

        Raises:
            LaunchError: the spec cannot run on this backend (``bad_spec``).
        """
        ...

    async def launch(self, node_id: str, spec: NodeSpec, secret: str) -> Cluster:
        """Start the node; returns once the backend has created it (not once it serves).
        ``secret`` reaches the node's agent only (never a task file in clear): it signs
        the node's events with it.

        Raises:
            LaunchError: the node could not be created.
        """
        ...

    async def terminate(self, node_id: str, *, graceful: bool) -> bool:
        """Stop the node; True when something was running. A graceful stop lets the
        node drain before it is killed."""
        ...

    async def inventory(self) -> list[Cluster]:
        """Every ``cic-`` cluster this backend runs now."""
        ...


def launch_plan(spec: NodeSpec) -> list[NodeSpec]:
    """What to try, in order: the spec itself, then on demand when a spot spec allows
    falling back."""
    if spec.use_spot and spec.spot_fallback:
        return [spec, spec.model_copy(update={"use_spot": False})]
    return [spec]


def _token(value: str) -> str:
    return _UNSAFE.sub("", value.lower().replace("_", "-").replace(".", "-")) or "any"


def cluster_name(*, provider: str, region: str, gpu: str, spot: bool, node_id: str) -> str:
    """``cic-{provider}-{region}-{gpu}-{spot|od}-{id}``, lower case and within 63 chars.

    Empty provider or region (left to the optimizer) read ``any``. The id is never
    shortened, so ``node_id_of`` can always recover it.
    """
    market = "spot" if spot else "od"
    head = "-".join(_token(p) for p in (provider, region, gpu, market))
    room = _MAX_NAME - len(CLUSTER_PREFIX) - len(node_id) - 1
    return f"{CLUSTER_PREFIX}{head[:room].rstrip('-')}-{node_id}"


def node_id_of(name: str) -> str | None:
    """The node id at the end of a ``cic-`` cluster name, or None for a foreign name."""
    if not name.startswith(CLUSTER_PREFIX):
        return None
    tail = name.rsplit("-", 1)[-1]
    return tail or None
