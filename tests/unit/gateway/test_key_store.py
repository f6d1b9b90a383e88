"""The key store while PostgreSQL is away: keys it has seen keep working (nobody can revoke
one meanwhile), a key it has not seen gets a 503 to retry, never a 401 or a 500."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import asyncpg
import pytest
from cic_gateway.adapters.keys import STALE_SECONDS, KeyStore
from cic_gateway.domain.errors import ApiError
from cic_gateway.domain.keys import ParsedKey, generate_key, hash_secret
from cic_gateway.entrypoints.auth import key_of


class FlakyPool:
    """Answers key lookups from a dict, or fails as a pool does when the server is down."""

    def __init__(self, rows: dict[str, dict[str, Any]]) -> None:
        self.rows = rows
        self.down = False
        self.hung = False
        self.queries = 0

    async def fetchrow(self, _query: str, prefix: str) -> dict[str, Any] | None:
        self.queries += 1
        if self.down:
            raise ConnectionRefusedError(111, "Connect call failed")
        if self.hung:  # a server that takes the connection and never answers
            await asyncio.sleep(3600)
        return self.rows.get(prefix)


def row(parsed: ParsedKey) -> dict[str, Any]:
    limits = {"rpm_limit": None, "tpm_limit": None}
    return {"id": "k1", "name": "n", "scope": "user", "tenant": "t", "allowed_models": None,
            **limits,
            "secret_sha256": hash_secret(parsed.secret)}  # fmt: skip


@pytest.fixture
def known() -> tuple[str, ParsedKey]:
    return generate_key()


@pytest.fixture
def pool(known: tuple[str, ParsedKey]) -> FlakyPool:
    return FlakyPool({known[1].prefix: row(known[1])})


def store(pool: FlakyPool) -> KeyStore:
    return KeyStore(cast(asyncpg.Pool, pool), cache_seconds=-1.0)  # every lookup asks


async def test_a_key_seen_before_still_works_while_postgres_is_away(
    pool: FlakyPool, known: tuple[str, ParsedKey]
) -> None:
    keys = store(pool)
    assert (await keys.authenticate(known[1])) is not None
    pool.down = True
    key = await keys.authenticate(known[1])
    assert key is not None
    assert key.id == "k1"
    assert pool.queries == 2  # it did ask, and fell back on the answer it had
    wrong = ParsedKey(known[1].prefix, "not-the-secret")
    assert (await keys.authenticate(wrong)) is None  # the secret is still checked


async def test_a_key_not_seen_gets_a_503_to_retry_while_postgres_is_away(
    pool: FlakyPool, known: tuple[str, ParsedKey]
) -> None:
    keys = store(pool)
    pool.down = True
    with pytest.raises(ApiError) as refused:
        await key_of(keys, f"Bearer {known[0]}")
    assert refused.value.status == 503
    assert refused.value.retry_after == 1
    pool.down = False
    assert (await key_of(keys, f"Bearer {known[0]}")).id == "k1"


async def test_a_postgres_that_hangs_counts_as_away_after_a_second(
    pool: FlakyPool, known: tuple[str, ParsedKey]
) -> None:
    keys = store(pool)
    assert (await keys.authenticate(known[1])) is not None
    pool.hung = True
    key = await keys.authenticate(known[1])  # the lookup gives up after LOOKUP_SECONDS
    assert key is not None
    assert key.id == "k1"


async def test_an_answer_older_than_the_stale_limit_is_not_used(
    pool: FlakyPool, known: tuple[str, ParsedKey]
) -> None:
    keys = store(pool)
    assert (await keys.authenticate(known[1])) is not None
    expires, digest, key = keys._cache[known[1].prefix]
    keys._cache[known[1].prefix] = (expires - STALE_SECONDS - 1, digest, key)  # long ago
    pool.down = True
    with pytest.raises(ApiError) as refused:
        await key_of(keys, f"Bearer {known[0]}")
    assert refused.value.status == 503
