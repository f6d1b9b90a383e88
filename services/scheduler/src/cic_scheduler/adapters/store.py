"""The scheduler's database work: one deployment at a time, under an advisory lock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from cic_common.events import (
    Event,
    LaunchRequested,
    NodeDraining,
    NodeSpec,
    TerminateRequested,
)
from cic_common.ids import new_node_id
from cic_common.lifecycle import TERMINAL, NodeStatus, allowed_from

from cic_scheduler.domain.autoscaling import AutoscalePolicy, Proposal
from cic_scheduler.domain.placement import deployment_policy
from cic_scheduler.domain.planning import (
    Decision,
    DeploymentView,
    DrainNode,
    LaunchReplica,
    NodeView,
    RequestTerminate,
    ResendLaunch,
)

__all__ = ["AutoscaledDeployment", "Outbox", "SchedulerStore"]


@dataclass(frozen=True)
class AutoscaledDeployment:
    id: str
    model: str
    current: int
    policy: AutoscalePolicy
    proposal: Proposal | None


Outbox = list[tuple[Event, str]]
"""Events to publish after the transaction commits, with their ``Nats-Msg-Id``."""
Planner = Callable[[DeploymentView, list[NodeView]], list[Decision]]


class SchedulerStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def deployments_to_reconcile(self) -> list[str]:
        """Live deployments, and deleted ones that still have nodes not yet terminal."""
        rows = await self._pool.fetch(
            "SELECT d.id FROM deployments d WHERE d.deleted_at IS NULL OR EXISTS ("
            " SELECT 1 FROM nodes n WHERE n.deployment_id = d.id"
            " AND NOT (n.status = ANY($1::text[]))) ORDER BY d.created_at",
            sorted(s.value for s in TERMINAL),
        )
        return [r["id"] for r in rows]

    async def autoscaled(self) -> list[AutoscaledDeployment]:
        rows = await self._pool.fetch(
            "SELECT id, model, replicas, autoscaler, min_replicas, max_replicas,"
            " target_in_flight, target_rps, target_p95, autoscaled_replicas,"
            " autoscale_proposal FROM deployments"
            " WHERE deleted_at IS NULL AND autoscaler <> 'none' ORDER BY id"
        )
        found = []
        for r in rows:
            last = r["autoscale_proposal"]
            policy = AutoscalePolicy(
                name=r["autoscaler"],
                min_replicas=r["min_replicas"] if r["min_replicas"] is not None else r["replicas"],
                max_replicas=r["max_replicas"] if r["max_replicas"] is not None else r["replicas"],
                target=r["target_in_flight"],
                target_rps=r["target_rps"],
                target_p95=r["target_p95"],
            )
            proposal = None
            if last:
                proposal = Proposal(last["replicas"], datetime.fromisoformat(last["since"]))
            current = r["autoscaled_replicas"] or r["replicas"]
            found.append(AutoscaledDeployment(r["id"], r["model"], current, policy, proposal))
        return found

    async def save_autoscale(
        self, deployment_id: str, replicas: int, proposal: Proposal | None
    ) -> None:
        """The scheduler's own fact: the count it holds, and what it is waiting to do."""
        memory = None
        if proposal is not None:
            memory = {"replicas": proposal.replicas, "since": proposal.since.isoformat()}
        await self._pool.execute(
            "UPDATE deployments SET autoscaled_replicas = $2, autoscale_proposal = $3"
            " WHERE id = $1",
            deployment_id,
            replicas,
            memory,
        )

    async def deployment_of(self, node_id: str) -> str | None:
        value: str | None = await self._pool.fetchval(
            "SELECT deployment_id FROM nodes WHERE id = $1", node_id
        )
        return value

    async def reconcile(self, deployment_id: str, planner: Planner) -> Outbox:
        """Plan and record the decisions for one deployment; returns what to publish.

        Instances take a transaction-scoped advisory lock per deployment: a second
        instance skips it (the holder does the work), so no replica is launched twice.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            locked = await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock(hashtext('scheduler:' || $1))", deployment_id
            )
            if not locked:
                return []
            row = await conn.fetchrow("SELECT * FROM deployments WHERE id = $1", deployment_id)
            if row is None:
                return []
            deployment = _deployment_view(row)
            # Live nodes, and those ended within the backoff: they say where spot failed.
            node_rows = await conn.fetch(
                "SELECT * FROM nodes WHERE deployment_id = $1 AND (NOT (status = ANY($2::text[]))"
                " OR updated_at > now() - $3::interval)",
                deployment_id,
                sorted(s.value for s in TERMINAL),
                deployment.policy.backoff,
            )
            by_id = {r["id"]: r for r in node_rows}
            decisions = planner(deployment, [_node_view(r) for r in node_rows])
            outbox: Outbox = []
            for decision in decisions:
                outbox += await _execute(conn, decision, by_id)
            return outbox


async def _execute(conn: asyncpg.Connection, decision: Decision, nodes: dict[str, Any]) -> Outbox:
    if isinstance(decision, LaunchReplica):
        node_id = new_node_id()
        await conn.execute(
            "INSERT INTO nodes (id, deployment_id, generation, status, spec, backend,"
            " command_sent_at) VALUES ($1, $2, $3, 'requested', $4, $5, now())",
            node_id,
            decision.deployment_id,
            decision.generation,
            decision.spec.model_dump(mode="json"),
            decision.spec.backend,
        )
        event = LaunchRequested(
            node_id=node_id,
            deployment_id=decision.deployment_id,
            generation=decision.generation,
            spec=decision.spec,
        )
        return [(event, f"launch:{node_id}")]
    if isinstance(decision, ResendLaunch):
        row = nodes[decision.node_id]
        await _touch(conn, decision.node_id)
        event = LaunchRequested(
            node_id=row["id"],
            deployment_id=row["deployment_id"],
            generation=row["generation"],
            spec=NodeSpec.model_validate(row["spec"]),
        )
        return [(event, f"launch:{row['id']}")]
    if isinstance(decision, DrainNode):
        moved = await conn.execute(
            "UPDATE nodes SET status = 'draining', status_reason = $2, updated_at = now(),"
            " command_sent_at = now() WHERE id = $1 AND status = ANY($3::text[])",
            decision.node_id,
            decision.reason,
            allowed_from(NodeStatus.DRAINING),
        )
        if not moved.endswith(" 1"):
            return []
        return [
            (NodeDraining(node_id=decision.node_id, reason=decision.reason), ""),
            (TerminateRequested(node_id=decision.node_id, reason=decision.reason), ""),
        ]
    assert isinstance(decision, RequestTerminate)
    await _touch(conn, decision.node_id)
    resent = TerminateRequested(
        node_id=decision.node_id, graceful=decision.graceful, reason="resent by the scheduler"
    )
    return [(resent, "")]


async def _touch(conn: asyncpg.Connection, node_id: str) -> None:
    await conn.execute("UPDATE nodes SET command_sent_at = now() WHERE id = $1", node_id)


def _deployment_view(row: Any) -> DeploymentView:
    spec = NodeSpec(
        model=row["model"],
        engine=row["engine"],
        backend=row["backend"],
        accelerator=row["accelerator"],
        max_model_len=row["max_model_len"],
        engine_args=tuple(row["engine_args"]),
        disk_size=row["disk_size"],
        disk_tier=row["disk_tier"],
        params_billion=row["params_billion"],
    )
    policy = deployment_policy(row["spot_policy"], row["placement"], row["spot_spares"])
    autoscaled = row["autoscaler"] != "none" and row["autoscaled_replicas"] is not None
    return DeploymentView(
        id=row["id"],
        generation=row["generation"],
        replicas=row["autoscaled_replicas"] if autoscaled else row["replicas"],
        deleted=row["deleted_at"] is not None,
        spec=spec,
        policy=policy,
        locations=tuple(row["locations"]),
        revision=row["revision"],
    )


def _node_view(row: Any) -> NodeView:
    return NodeView(
        id=row["id"],
        status=NodeStatus(row["status"]),
        requested_at=row["requested_at"],
        updated_at=row["updated_at"],
        command_sent_at=row["command_sent_at"],
        location=row["spec"].get("infra"),
        spot=bool(row["spec"].get("use_spot")),
        reason=row["status_reason"],
        revision=row["generation"],
    )
