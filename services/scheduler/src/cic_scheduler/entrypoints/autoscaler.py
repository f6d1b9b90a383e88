"""The autoscaling pass: read each autoscaled deployment's load, decide, hold the count."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from cic_common.replicas import Replica, ReplicaTable

from cic_scheduler.adapters.store import AutoscaledDeployment, SchedulerStore
from cic_scheduler.domain.autoscaling import Load, autoscale

__all__ = ["Autoscaler"]

log = logging.getLogger(__name__)


class Autoscaler:
    """Reads load from the replica table (the heartbeats' figures of the routable
    replicas: requests running and waiting, finished per second, p95 latency), runs the
    deployment's policy, and records the count for the reconcile pass to hold.
    Level-triggered: each pass starts from what is stored."""

    def __init__(
        self,
        store: SchedulerStore,
        table: ReplicaTable,
        reconcile: Callable[[str], Awaitable[None]],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._table = table
        self._reconcile = reconcile
        self._clock = clock

    async def due(self) -> list[AutoscaledDeployment]:
        return await self._store.autoscaled()

    async def process(self, deployment: AutoscaledDeployment) -> None:
        replicas = [r for r in await self._table.replicas(deployment.model) if not r.draining]
        load = Load(
            ready=len(replicas),
            running=sum(r.requests_running for r in replicas),
            waiting=sum(r.requests_waiting for r in replicas),
            requests_per_second=sum(r.requests_per_second for r in replicas),
            latency_p95=_p95(replicas),
        )
        count, proposal = autoscale(
            deployment.current, load, deployment.proposal, self._clock(), deployment.policy
        )
        await self._store.save_autoscale(deployment.id, count, proposal)
        if count != deployment.current:
            log.info("autoscaled", extra={"deployment": deployment.id, "from": deployment.current,
                                          "to": count})  # fmt: skip
            await self._reconcile(deployment.id)


def _p95(replicas: list[Replica]) -> float | None:
    """The replicas' p95 latencies, each weighted by the requests it finished."""
    known = [(r.latency_p95, r.requests_per_second) for r in replicas if r.latency_p95 is not None]
    if not known:
        return None
    weight = sum(w for _, w in known)
    if weight <= 0:
        return max(p for p, _ in known)
    return sum(p * w for p, w in known) / weight
