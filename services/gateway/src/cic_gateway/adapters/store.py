"""PostgreSQL access of the gateway: deployments (desired state), each of a tenant."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
from cic_common.db import UNAVAILABLE
from cic_common.ids import new_deployment_id

from cic_gateway.adapters.keys import LOOKUP_SECONDS, STALE_SECONDS
from cic_gateway.domain.deployments import DeploymentCreate, DeploymentPatch

__all__ = ["DeploymentStore", "ModelClaimed"]

_DEPLOYMENT_COLUMNS = (
    "id, name, tenant, model, replicas, engine, backend, accelerator, max_model_len, engine_args,"
    " spot_policy, placement, locations, spot_spares, disk_size, disk_tier, params_billion,"
    " autoscaler, min_replicas, max_replicas, target_in_flight, target_rps, target_p95,"
    " autoscaled_replicas, generation, revision, created_at, updated_at, deleted_at"
)


class ModelClaimed(Exception):
    """Another tenant's live deployment serves the model: a model is served to one tenant."""


async def _claim(conn: asyncpg.Connection, model: str, tenant: str) -> None:
    """Hold ``model`` for ``tenant`` until the transaction ends; raises ``ModelClaimed``."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('model:' || $1))", model)
    other = await conn.fetchval(
        "SELECT tenant FROM deployments WHERE model = $1 AND deleted_at IS NULL"
        " AND tenant <> $2 LIMIT 1",
        model,
        tenant,
    )
    if other is not None:
        raise ModelClaimed(model)


class DeploymentStore:
    """The gateway is the only writer of deployments (desired state)."""

    def __init__(self, pool: asyncpg.Pool, cache_seconds: float = 1.0) -> None:
        self._pool = pool
        self._ttl = cache_seconds
        self._owners: dict[str, tuple[float, bool, str | None]] = {}

    async def create(self, spec: DeploymentCreate, tenant: str) -> dict[str, Any]:
        """Insert for ``tenant``; raises ``asyncpg.UniqueViolationError`` if a live one has
        the name, ``ModelClaimed`` if another tenant's serves the model."""
        dep_id = new_deployment_id()
        name = spec.name or f"{_slug(spec.model)}-{dep_id[1:7]}"
        async with self._pool.acquire() as conn, conn.transaction():
            await _claim(conn, spec.model, tenant)
            row = await self._insert(conn, spec, dep_id, name, tenant)
        self._owners.pop(spec.model, None)
        return dict(row)

    @staticmethod
    async def _insert(
        conn: asyncpg.Connection, spec: DeploymentCreate, dep_id: str, name: str, tenant: str
    ) -> asyncpg.Record:
        return await conn.fetchrow(
            "INSERT INTO deployments (id, name, model, replicas, engine, backend, accelerator,"
            " max_model_len, engine_args, spot_policy, placement, locations, spot_spares,"
            " disk_size, disk_tier, params_billion, autoscaler, min_replicas, max_replicas,"
            " target_in_flight, target_rps, target_p95, tenant) VALUES ($1,$2,$3,$4,$5,$6,$7,"
            " $8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22,$23)"
            f" RETURNING {_DEPLOYMENT_COLUMNS}",
            dep_id,
            name,
            spec.model,
            spec.replicas,
            spec.engine,
            spec.backend,
            spec.accelerator,
            spec.max_model_len,
            spec.engine_args,
            spec.spot_policy,
            spec.placement,
            spec.locations,
            spec.spot_spares,
            spec.disk_size,
            spec.disk_tier,
            spec.params_billion,
            spec.autoscaler,
            spec.min_replicas if spec.min_replicas is not None else spec.replicas,
            spec.max_replicas if spec.max_replicas is not None else spec.replicas,
            spec.target_in_flight,
            spec.target_rps,
            spec.target_p95,
            tenant,
        )

    async def serves(self, model: str) -> bool:
        """True when a live deployment of ``model`` wants replicas (so a request that
        finds none ready should come back later rather than give up)."""
        return (await self._owner(model))[0]

    async def tenant_of(self, model: str) -> str | None:
        """The tenant whose live deployments serve ``model``; None: no live one does."""
        return (await self._owner(model))[1]

    async def _owner(self, model: str) -> tuple[bool, str | None]:
        """Kept a second: a flood of requests is not a load on PostgreSQL; and while it is
        away, what it said last."""
        if "\x00" in model:  # no text PostgreSQL holds has one, and it refuses to compare
            return False, None
        now = time.monotonic()
        hit = self._owners.get(model)
        if hit is not None and hit[0] > now:
            return hit[1], hit[2]
        try:
            async with asyncio.timeout(LOOKUP_SECONDS):
                row = await self._pool.fetchrow(
                    "SELECT tenant, bool_or(replicas > 0) AS wants FROM deployments"
                    " WHERE model = $1 AND deleted_at IS NULL GROUP BY tenant LIMIT 1",
                    model,
                )
        except UNAVAILABLE:
            if hit is None or now - (hit[0] - self._ttl) > STALE_SECONDS:
                raise
            return hit[1], hit[2]
        if len(self._owners) > 10_000:
            self._owners.clear()
        found = (bool(row["wants"]), str(row["tenant"])) if row else (False, None)
        self._owners[model] = (now + self._ttl, *found)
        return found

    async def get(self, dep_id: str) -> dict[str, Any] | None:
        row = await self._pool.fetchrow(
            f"SELECT {_DEPLOYMENT_COLUMNS} FROM deployments WHERE id = $1", dep_id
        )
        return dict(row) if row else None

    async def list_all(
        self, include_deleted: bool = False, tenant: str | None = None
    ) -> list[dict[str, Any]]:
        """Every deployment, or those of ``tenant``; deleted ones too on request."""
        live = "" if include_deleted else " AND deleted_at IS NULL"
        rows = await self._pool.fetch(
            f"SELECT {_DEPLOYMENT_COLUMNS} FROM deployments"
            f" WHERE ($1::text IS NULL OR tenant = $1){live} ORDER BY created_at",
            tenant,
        )
        return [dict(r) for r in rows]

    async def update(self, dep_id: str, patch: DeploymentPatch) -> dict[str, Any] | None:
        """Apply ``patch`` and bump the generation; the revision too when what the nodes
        run changed. None if missing or deleted."""
        changes = patch.changes()
        async with self._pool.acquire() as conn, conn.transaction():
            current = await conn.fetchrow(
                "SELECT * FROM deployments WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
                dep_id,
            )
            if current is None:
                return None
            if changes.get("model", current["model"]) != current["model"]:
                await _claim(conn, str(changes["model"]), current["tenant"])
            respec = any(
                changes[f] != current[f] for f in DeploymentPatch.SPEC_FIELDS if f in changes
            )
            sets = [f"{name} = ${i}" for i, name in enumerate(changes, start=2)]
            sets += ["generation = generation + 1", "updated_at = now()"]
            if respec:
                sets.append("revision = revision + 1")
            row = await conn.fetchrow(
                f"UPDATE deployments SET {', '.join(sets)} WHERE id = $1"
                f" RETURNING {_DEPLOYMENT_COLUMNS}",
                dep_id,
                *changes.values(),
            )
        self._owners.pop(current["model"], None)
        self._owners.pop(row["model"], None)
        return dict(row)

    async def delete(self, dep_id: str) -> dict[str, Any] | None:
        """Mark deleted (idempotent: a second delete returns the same row unchanged)."""
        row = await self._pool.fetchrow(
            "UPDATE deployments SET deleted_at = coalesce(deleted_at, now()),"
            " generation = CASE WHEN deleted_at IS NULL THEN generation + 1 ELSE generation END,"
            f" updated_at = now() WHERE id = $1 RETURNING {_DEPLOYMENT_COLUMNS}",
            dep_id,
        )
        if row is not None:
            self._owners.pop(row["model"], None)
        return dict(row) if row else None

    async def reconcile_reports(self, limit: int) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            "SELECT at, clusters, orphans, lost, retried FROM reconcile_reports"
            " ORDER BY at DESC, id DESC LIMIT $1",
            limit,
        )
        return [dict(r) for r in rows]

    async def node_events(self, node_id: str) -> list[dict[str, Any]]:
        """The recorded commands and facts about one node, oldest first."""
        rows = await self._pool.fetch(
            "SELECT event_id, type, occurred_at, recorded_at, payload FROM node_events"
            " WHERE node_id = $1 ORDER BY occurred_at, recorded_at",
            node_id,
        )
        return [dict(r) for r in rows]

    async def nodes(self, dep_id: str | None, tenant: str | None = None) -> list[dict[str, Any]]:
        """The nodes of one deployment or all, of ``tenant``'s deployments when given."""
        rows = await self._pool.fetch(
            "SELECT n.id, n.deployment_id, n.status, n.status_reason, n.backend,"
            " n.cluster_name, n.endpoint, n.requested_at, n.ready_at, n.terminated_at"
            " FROM nodes n LEFT JOIN deployments d ON d.id = n.deployment_id"
            " WHERE ($1::text IS NULL OR n.deployment_id = $1)"
            " AND ($2::text IS NULL OR d.tenant = $2) ORDER BY n.requested_at",
            dep_id,
            tenant,
        )
        return [dict(r) for r in rows]

    async def node_tenant(self, node_id: str) -> str | None:
        """The tenant of the node's deployment; None for an unknown node."""
        found: str | None = await self._pool.fetchval(
            "SELECT d.tenant FROM nodes n JOIN deployments d ON d.id = n.deployment_id"
            " WHERE n.id = $1",
            node_id,
        )
        return found


def _slug(model: str) -> str:
    tail = model.rstrip("/").rsplit("/", 1)[-1].lower()
    slug = "".join(c if c.isalnum() else "-" for c in tail).strip("-")
    return slug[:40] or "model"
