"""Tenants kept apart: a tenant admin's key sees and manages its own tenant's deployments,
nodes, keys and usage only (another tenant's look missing), cannot act for another
tenant through any field, and a user key reaches only its tenant's models; an operator's
key (an admin key without a tenant) sees everything."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial

import asyncpg
import httpx
import openai
import pytest
from cic_common.replicas import Replica, ReplicaTable
from cic_gateway.bootstrap import create_app
from cic_gateway.domain.keys import generate_key
from cic_gateway.settings import GatewaySettings
from conftest import Servers
from redis.asyncio import Redis
from support import eventually, sim_engine


@dataclass(frozen=True)
class Tenant:
    name: str
    admin: dict[str, str]
    """Headers with the tenant admin's key."""
    model: str
    deployment_id: str
    user_key: str
    user_key_id: str


@dataclass(frozen=True)
class World:
    http: httpx.AsyncClient
    operator: dict[str, str]
    a: Tenant
    b: Tenant


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def tenant(http: httpx.AsyncClient, operator: dict[str, str], name: str) -> Tenant:
    """A tenant admin made by the operator, its deployment and a user key of its own."""
    body = {"name": f"{name} admin", "scope": "admin", "tenant": name}
    made = await http.post("/admin/keys", headers=operator, json=body)
    assert made.status_code == 201, made.text
    assert made.json()["tenant"] == name
    admin = bearer(made.json()["key"])
    model = f"{name}-model"
    deployed = await http.post("/admin/deployments", headers=admin,
                               json={"model": model, "replicas": 0})  # fmt: skip
    assert deployed.status_code == 201, deployed.text
    assert deployed.json()["tenant"] == name
    user = await http.post("/admin/keys", headers=admin, json={"name": f"{name} user"})
    assert user.status_code == 201, user.text
    assert user.json()["tenant"] == name  # a tenant admin's keys are its tenant's
    return Tenant(name, admin, model, deployed.json()["id"], user.json()["key"],
                  user.json()["id"])  # fmt: skip


@pytest.fixture
async def world(servers: Servers, database: str) -> AsyncIterator[World]:
    operator_key, _ = generate_key()
    settings = GatewaySettings(nats_url=servers.nats_url, postgres_dsn=database,
                               redis_url=servers.redis_url, admin_key=operator_key,
                               key_cache_seconds=0, table_refresh=30)  # fmt: skip
    app = create_app(settings)
    suffix = secrets.token_hex(3)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            operator = bearer(operator_key)
            a = await tenant(http, operator, f"acme-{suffix}")
            b = await tenant(http, operator, f"globex-{suffix}")
            yield World(http, operator, a, b)


async def test_a_tenant_admin_sees_only_its_own_deployments_and_keys(world: World) -> None:
    http, a, b = world.http, world.a, world.b
    listed = await http.get("/admin/deployments", headers=a.admin)
    assert {d["tenant"] for d in listed.json()["data"]} == {a.name}
    keys = await http.get("/admin/keys", headers=a.admin)
    assert {k["tenant"] for k in keys.json()["data"]} == {a.name}
    assert a.user_key_id in {k["id"] for k in keys.json()["data"]}
    everything = await http.get("/admin/deployments", headers=world.operator)
    assert {a.deployment_id, b.deployment_id} <= {d["id"] for d in everything.json()["data"]}

    other = f"/admin/deployments/{b.deployment_id}"
    assert (await http.get(other, headers=a.admin)).status_code == 404
    assert (await http.patch(other, headers=a.admin, json={"replicas": 5})).status_code == 404
    assert (await http.delete(other, headers=a.admin)).status_code == 404
    still = await http.get(other, headers=b.admin)
    assert still.json()["replicas"] == 0
    assert still.json()["deleted_at"] is None
    assert (await http.delete(f"/admin/keys/{b.user_key_id}", headers=a.admin)).status_code == 404
    assert (await http.get("/v1/models", headers=bearer(b.user_key))).status_code == 200


async def test_no_field_lets_a_tenant_admin_act_for_another_tenant(world: World) -> None:
    http, a, b = world.http, world.a, world.b
    for path, body in (
        ("/admin/deployments", {"model": "x-model", "tenant": b.name}),
        ("/admin/keys", {"name": "sneaky", "tenant": b.name}),
        ("/admin/keys", {"name": "sneaky", "scope": "admin", "tenant": b.name}),
    ):
        refused = await http.post(path, headers=a.admin, json=body)
        assert refused.status_code == 403, (path, body, refused.text)
        assert refused.json()["error"]["code"] == "other_tenant"
    # An admin key a tenant admin makes is its own tenant's, never an operator's.
    made = await http.post("/admin/keys", headers=a.admin, json={"name": "x", "scope": "admin"})
    assert made.json()["tenant"] == a.name
    # Another tenant's model is not to be had, by creating or by renaming a deployment.
    taken = await http.post("/admin/deployments", headers=a.admin, json={"model": b.model})
    assert taken.status_code == 409, taken.text
    renamed = await http.patch(f"/admin/deployments/{a.deployment_id}", headers=a.admin,
                               json={"model": b.model})  # fmt: skip
    assert renamed.status_code == 409, renamed.text
    reports = await http.get("/admin/reconcile/reports", headers=a.admin)
    assert reports.status_code == 403
    assert (await http.get("/admin/reconcile/reports", headers=world.operator)).status_code == 200


async def test_usage_and_nodes_are_shown_to_their_tenant_only(world: World, database: str) -> None:
    http, a, b = world.http, world.a, world.b
    conn = await asyncpg.connect(database)
    try:
        for t in (a, b):
            await conn.execute(
                "INSERT INTO usage (request_id, key_id, model, prompt_tokens,"
                " completion_tokens) VALUES ($1, $2, $3, 3, 4)",
                f"req-{t.user_key_id}", t.user_key_id, t.model,
            )  # fmt: skip
            await conn.execute(
                "INSERT INTO nodes (id, deployment_id, generation, status, spec, backend)"
                " VALUES ($1, $2, 1, 'active', '{}', 'local')",
                f"n{t.user_key_id}", t.deployment_id,
            )  # fmt: skip
    finally:
        await conn.close()
    usage = await http.get("/admin/usage", headers=a.admin)
    assert {row["key_id"] for row in usage.json()["data"]} == {a.user_key_id}
    asked = await http.get("/admin/usage", headers=a.admin, params={"key_id": b.user_key_id})
    assert asked.json()["data"] == []
    seen = await http.get("/admin/usage", headers=world.operator)
    assert {a.user_key_id, b.user_key_id} <= {row["key_id"] for row in seen.json()["data"]}
    nodes = await http.get("/admin/nodes", headers=a.admin)
    assert [n["id"] for n in nodes.json()["data"]] == [f"n{a.user_key_id}"]
    theirs = await http.get(f"/admin/nodes/n{b.user_key_id}/events", headers=a.admin)
    assert theirs.status_code == 404


async def models_listed(client: openai.AsyncOpenAI, wanted: set[str]) -> bool:
    return {m.id for m in (await client.models.list()).data} == wanted


async def test_a_user_key_reaches_its_own_tenants_models_only(world: World, redis: Redis) -> None:
    http, a, b = world.http, world.a, world.b
    async with sim_engine(a.model) as engine:
        await ReplicaTable(redis).apply(
            [Replica(node_id=f"n{t.name}", deployment_id=t.deployment_id, model=t.model,
                     endpoint=engine.base_url) for t in (a, b)], [],
        )  # fmt: skip
        clients = {
            t.name: openai.AsyncOpenAI(base_url="http://gw/v1", api_key=t.user_key,
                                       max_retries=0, http_client=http)  # type: ignore[arg-type]
            for t in (a, b)
        }  # fmt: skip
        await eventually(partial(models_listed, clients[a.name], {a.model}))
        await eventually(partial(models_listed, clients[b.name], {b.model}))
        said = await clients[a.name].chat.completions.create(
            model=a.model, messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert said.choices[0].message.content
        for t, other in ((a, b), (b, a)):
            with pytest.raises(openai.NotFoundError) as refused:
                await clients[t.name].chat.completions.create(
                    model=other.model, messages=[{"role": "user", "content": "hi"}]
                )
            assert refused.value.code == "model_not_found"
