"""PostgreSQL access of the gateway: deployments (desired state) and API keys."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import asyncpg
from cic_common.db import UNAVAILABLE
from cic_common.ids import new_deployment_id

from cic_gateway.domain.deployments import DeploymentCreate, DeploymentPatch
from cic_gateway.domain.keys import ParsedKey, generate_key, hash_secret, secret_matches

__all__ = ["ApiKey", "DeploymentStore", "KeyStore"]

_DEPLOYMENT_COLUMNS = (
    "id, name, model, replicas, engine, backend, accelerator, max_model_len, engine_args,"
    " spot_policy, placement, locations, spot_spares, disk_size, disk_tier, params_billion,"
    " autoscaler, min_replicas, max_replicas, target_in_flight, target_rps, target_p95,"
    " autoscaled_replicas, generation, revision, created_at, updated_at, deleted_at"
)


class DeploymentStore:
    """The gateway is the only writer of deployments (desired state)."""

    def __init__(self, pool: asyncpg.Pool, cache_seconds: float = 1.0) -> None:
        self._pool = pool
        self._ttl = cache_seconds
        self._served: dict[str, tuple[float, bool]] = {}

    async def create(self, spec: DeploymentCreate) -> dict[str, Any]:
        """Insert; raises ``asyncpg.UniqueViolationError`` if a live one has the name."""
        dep_id = new_deployment_id()
        name = spec.name or f"{_slug(spec.model)}-{dep_id[1:7]}"
        row = await self._pool.fetchrow(
            "INSERT INTO deployments (id, name, model, replicas, engine, backend, accelerator,"
            " max_model_len, engine_args, spot_policy, placement, locations, spot_spares,"
            " disk_size, disk_tier, params_billion, autoscaler, min_replicas, max_replicas,"
            " target_in_flight, target_rps, target_p95) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,"
            " $11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22)"
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
        )
        return dict(row)

    async def serves(self, model: str) -> bool:
        """True when a live deployment of ``model`` wants replicas (so a request that
        finds none ready should come back later rather than give up)."""
        if "\x00" in model:  # no text PostgreSQL holds has one, and it refuses to compare
            return False
        now = time.monotonic()
        hit = self._served.get(model)
        if hit is not None and hit[0] > now:
            return hit[1]  # kept a second: a flood of unservable requests is not a DB load
        found = bool(await self._pool.fetchval(
            "SELECT true FROM deployments WHERE model = $1 AND deleted_at IS NULL"
            " AND replicas > 0 LIMIT 1",
            model,
        ))  # fmt: skip
        if len(self._served) > 10_000:
            self._served.clear()
        self._served[model] = (now + self._ttl, found)
        return found

    async def get(self, dep_id: str) -> dict[str, Any] | None:
        row = await self._pool.fetchrow(
            f"SELECT {_DEPLOYMENT_COLUMNS} FROM deployments WHERE id = $1", dep_id
        )
        return dict(row) if row else None

    async def list_all(self, include_deleted: bool = False) -> list[dict[str, Any]]:
        where = "" if include_deleted else "WHERE deleted_at IS NULL"
        rows = await self._pool.fetch(
            f"SELECT {_DEPLOYMENT_COLUMNS} FROM deployments {where} ORDER BY created_at"
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
        return dict(row)

    async def delete(self, dep_id: str) -> dict[str, Any] | None:
        """Mark deleted (idempotent: a second delete returns the same row unchanged)."""
        row = await self._pool.fetchrow(
            "UPDATE deployments SET deleted_at = coalesce(deleted_at, now()),"
            " generation = CASE WHEN deleted_at IS NULL THEN generation + 1 ELSE generation END,"
            f" updated_at = now() WHERE id = $1 RETURNING {_DEPLOYMENT_COLUMNS}",
            dep_id,
        )
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

    async def nodes(self, dep_id: str | None) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            "SELECT id, deployment_id, status, status_reason, backend, cluster_name, endpoint,"
            " requested_at, ready_at, terminated_at FROM nodes"
            " WHERE ($1::text IS NULL OR deployment_id = $1) ORDER BY requested_at",
            dep_id,
        )
        return [dict(r) for r in rows]


def _slug(model: str) -> str:
    tail = model.rstrip("/").rsplit("/", 1)[-1].lower()
    slug = "".join(c if c.isalnum() else "-" for c in tail).strip("-")
    return slug[:40] or "model"


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    scope: str
    allowed_models: tuple[str, ...] | None
    rpm_limit: int | None = None
    """Requests per minute across every gateway instance; None: no limit."""
    tpm_limit: int | None = None
    """Tokens (prompt and completion) per minute, likewise."""

    def may_use(self, model: str) -> bool:
        return self.allowed_models is None or model in self.allowed_models


class KeyStore:
    """API keys, stored as SHA-256 hashes; lookups are cached for ``cache_seconds``."""

    def __init__(self, pool: asyncpg.Pool, cache_seconds: float) -> None:
        self._pool = pool
        self._ttl = cache_seconds
        self._cache: dict[str, tuple[float, bytes, ApiKey | None]] = {}

    async def create(
        self,
        name: str,
        scope: str,
        allowed_models: list[str] | None,
        key_id: str | None = None,
        rpm_limit: int | None = None,
        tpm_limit: int | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """A new key; returns the full key (shown once) and its public record."""
        full, parsed = generate_key()
        row = await self._pool.fetchrow(
            "INSERT INTO api_keys (id, prefix, secret_sha256, name, scope, allowed_models,"
            " rpm_limit, tpm_limit) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " RETURNING id, prefix, name, scope, allowed_models, rpm_limit, tpm_limit,"
            " created_at, revoked_at",
            key_id or f"k{parsed.prefix}",
            parsed.prefix,
            hash_secret(parsed.secret),
            name,
            scope,
            allowed_models,
            rpm_limit,
            tpm_limit,
        )
        return full, dict(row)

    async def ensure(self, key_id: str, parsed: ParsedKey, name: str, scope: str) -> None:
        """Store a key given from outside (the bootstrap admin key); idempotent."""
        await self._pool.execute(
            "INSERT INTO api_keys (id, prefix, secret_sha256, name, scope) VALUES ($1,$2,$3,$4,$5)"
            " ON CONFLICT (id) DO UPDATE SET prefix = $2, secret_sha256 = $3, revoked_at = NULL",
            key_id,
            parsed.prefix,
            hash_secret(parsed.secret),
            name,
            scope,
        )

    async def list_all(self) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            "SELECT id, prefix, name, scope, allowed_models, rpm_limit, tpm_limit, created_at,"
            " revoked_at FROM api_keys ORDER BY created_at"
        )
        return [dict(r) for r in rows]

    async def revoke(self, key_id: str) -> bool:
        result: str = await self._pool.execute(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1", key_id
        )
        self._cache.clear()
        return result.endswith(" 1")

    async def authenticate(self, parsed: ParsedKey) -> ApiKey | None:
        """The live key whose prefix and secret match, else None (constant-time check)."""
        now = time.monotonic()
        hit = self._cache.get(parsed.prefix)
        if hit is None or hit[0] < now:
            try:
                row = await self._pool.fetchrow(
                    "SELECT id, name, scope, allowed_models, rpm_limit, tpm_limit,"
                    " secret_sha256 FROM api_keys WHERE prefix = $1 AND revoked_at IS NULL",
                    parsed.prefix,
                )
            except UNAVAILABLE:
                if hit is None:
                    raise
                # PostgreSQL is away, and with it any way to revoke a key: keep answering
                # as it last did rather than refuse every request until it is back.
                _, digest, key = hit
                return key if key is not None and secret_matches(parsed.secret, digest) else None
            key = None
            digest = b""
            if row is not None:
                models = row["allowed_models"]
                key = ApiKey(
                    row["id"],
                    row["name"],
                    row["scope"],
                    tuple(models) if models is not None else None,
                    row["rpm_limit"],
                    row["tpm_limit"],
                )
                digest = bytes(row["secret_sha256"])
            hit = (now + self._ttl, digest, key)
            self._cache[parsed.prefix] = hit
        _, digest, key = hit
        if key is None or not secret_matches(parsed.secret, digest):
            return None
        return key
