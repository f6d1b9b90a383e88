"""API keys across gateway instances: each instance caches key lookups for
``key_cache_seconds``, so a key revoked through one instance is refused by every other
one once that period has passed, and the revocation is what every admin list shows."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from cic_gateway.bootstrap import create_app
from cic_gateway.domain.keys import generate_key
from cic_gateway.settings import GatewaySettings
from conftest import Servers
from support import eventually

MARGIN = 0.5
"""Seconds allowed beyond the cache period for a request to arrive and be answered."""


@contextlib.asynccontextmanager
async def _gateway(settings: GatewaySettings, name: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{name}") as client:
            yield client


async def test_a_key_revoked_through_one_gateway_is_refused_by_another_within_the_cache_period(
    servers: Servers, database: str
) -> None:
    admin_key, _ = generate_key()
    admin = {"Authorization": f"Bearer {admin_key}"}
    settings = GatewaySettings(
        nats_url=servers.nats_url,
        postgres_dsn=database,
        redis_url=servers.redis_url,
        admin_key=admin_key,
    )
    period = settings.key_cache_seconds
    assert period == 1.0  # the default, which this test is about
    async with _gateway(settings, "gw-a") as a, _gateway(settings, "gw-b") as b:
        created = await a.post("/admin/keys", json={"name": "shared"}, headers=admin)
        assert created.status_code == 201, created.text
        key_id = created.json()["id"]
        user = {"Authorization": f"Bearer {created.json()['key']}"}
        assert (await a.get("/v1/models", headers=user)).status_code == 200
        assert (await b.get("/v1/models", headers=user)).status_code == 200  # B caches it live

        revoked = await a.delete(f"/admin/keys/{key_id}", headers=admin)
        assert revoked.status_code == 204
        refused_by_a = await a.get("/v1/models", headers=user)
        assert refused_by_a.status_code == 401  # the instance that revoked it forgets it at once
        assert refused_by_a.json()["error"]["code"] == "invalid_api_key"

        async def refused_by_b() -> bool:
            return (await b.get("/v1/models", headers=user)).status_code == 401

        await eventually(refused_by_b, within=period + MARGIN, every=0.05)
        still_refused = await b.post("/v1/chat/completions", json={"model": "m"}, headers=user)
        assert still_refused.status_code == 401

        for gateway in (a, b):
            listed = await gateway.get("/admin/keys", headers=admin)
            assert listed.status_code == 200
            entry = next(k for k in listed.json()["data"] if k["id"] == key_id)
            assert entry["revoked_at"] is not None
            assert "key" not in entry  # the key itself is never listed


async def test_revoking_a_key_twice_or_an_unknown_one(servers: Servers, database: str) -> None:
    admin_key, _ = generate_key()
    admin = {"Authorization": f"Bearer {admin_key}"}
    settings = GatewaySettings(nats_url=servers.nats_url, postgres_dsn=database,
                               redis_url=servers.redis_url, admin_key=admin_key)  # fmt: skip
    async with _gateway(settings, "gw") as gw:
        created = await gw.post("/admin/keys", json={"name": "twice"}, headers=admin)
        key_id = created.json()["id"]
        assert (await gw.delete(f"/admin/keys/{key_id}", headers=admin)).status_code == 204
        listed = (await gw.get("/admin/keys", headers=admin)).json()["data"]
        first = next(k["revoked_at"] for k in listed if k["id"] == key_id)
        again = await gw.delete(f"/admin/keys/{key_id}", headers=admin)
        assert again.status_code == 204  # idempotent, and the first revocation time stays
        listed = (await gw.get("/admin/keys", headers=admin)).json()["data"]
        assert next(k["revoked_at"] for k in listed if k["id"] == key_id) == first
        unknown = await gw.delete("/admin/keys/knosuchkey000", headers=admin)
        assert unknown.status_code == 404
        assert unknown.json()["error"]["type"] == "not_found_error"
