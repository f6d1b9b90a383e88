"""API keys: stored as SHA-256 hashes, looked up by their public prefix, each an admin's
or a user's, and each of a tenant (an admin key without one is an operator's)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
from cic_common.db import UNAVAILABLE

from cic_gateway.domain.deployments import DEFAULT_TENANT
from cic_gateway.domain.keys import ParsedKey, generate_key, hash_secret, secret_matches

__all__ = ["ApiKey", "KeyStore"]

LOOKUP_SECONDS = 1.0
"""A key lookup PostgreSQL has not answered by then counts as PostgreSQL away."""
STALE_SECONDS = 300.0
"""While PostgreSQL is away, a lookup made up to this long ago still answers."""
_MOST_CACHED = 100_000
_COLUMNS = (
    "id, prefix, name, scope, tenant, allowed_models, rpm_limit, tpm_limit, created_at, revoked_at"
)


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
    tenant: str | None = None
    """Whose key it is; None only for an operator's admin key, which sees every tenant."""

    def may_use(self, model: str) -> bool:
        return self.allowed_models is None or model in self.allowed_models

    @property
    def operator(self) -> bool:
        return self.scope == "admin" and self.tenant is None


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
        tenant: str | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """A new key; returns the full key (shown once) and its public record."""
        full, parsed = generate_key()
        row = await self._pool.fetchrow(
            "INSERT INTO api_keys (id, prefix, secret_sha256, name, scope, allowed_models,"
            f" rpm_limit, tpm_limit, tenant) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            f" RETURNING {_COLUMNS}",
            key_id or f"k{parsed.prefix}",
            parsed.prefix,
            hash_secret(parsed.secret),
            name,
            scope,
            allowed_models,
            rpm_limit,
            tpm_limit,
            tenant,
        )
        return full, dict(row)

    async def ensure(
        self, key_id: str, parsed: ParsedKey, name: str, scope: str, tenant: str | None = None
    ) -> None:
        """Store a key given from outside (the bootstrap admin key: an operator's);
        idempotent. A user key without a tenant is the default tenant's."""
        if tenant is None and scope != "admin":
            tenant = DEFAULT_TENANT
        await self._pool.execute(
            "INSERT INTO api_keys (id, prefix, secret_sha256, name, scope, tenant)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO UPDATE SET prefix = $2,"
            " secret_sha256 = $3, scope = $5, tenant = $6, revoked_at = NULL",
            key_id,
            parsed.prefix,
            hash_secret(parsed.secret),
            name,
            scope,
            tenant,
        )

    async def list_all(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Every key, or those of ``tenant``."""
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM api_keys WHERE ($1::text IS NULL OR tenant = $1)"
            " ORDER BY created_at",
            tenant,
        )
        return [dict(r) for r in rows]

    async def revoke(self, key_id: str, tenant: str | None = None) -> bool:
        """Revoke the key (of ``tenant``, when given); False if there is none such."""
        result: str = await self._pool.execute(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())"
            " WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)",
            key_id,
            tenant,
        )
        self._cache.clear()
        return result.endswith(" 1")

    async def authenticate(self, parsed: ParsedKey) -> ApiKey | None:
        """The live key whose prefix and secret match, else None (constant-time check)."""
        now = time.monotonic()
        hit = self._cache.get(parsed.prefix)
        if hit is None or hit[0] < now:
            try:
                async with asyncio.timeout(LOOKUP_SECONDS):
                    row = await self._pool.fetchrow(
                        "SELECT id, name, scope, tenant, allowed_models, rpm_limit, tpm_limit,"
                        " secret_sha256 FROM api_keys WHERE prefix = $1 AND revoked_at IS NULL",
                        parsed.prefix,
                    )
            except UNAVAILABLE:
                if hit is None or now - (hit[0] - self._ttl) > STALE_SECONDS:
                    raise
                # PostgreSQL is away, and with it any way to revoke a key: keep answering
                # as it did a moment ago rather than refuse every request until it is back.
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
                    row["tenant"],
                )
                digest = bytes(row["secret_sha256"])
            hit = (now + self._ttl, digest, key)
            if len(self._cache) >= _MOST_CACHED:  # prefixes anyone may make up
                self._cache.clear()
            self._cache[parsed.prefix] = hit
        _, digest, key = hit
        if key is None or not secret_matches(parsed.secret, digest):
            return None
        return key
