"""The gateway's HTTP surface on real PostgreSQL, Redis and NATS: every bad request gets
a clear OpenAI-shaped error, and the admin API does what it says."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cic_common.bus import Bus
from cic_common.streams import PRICES_SUBJECT
from cic_gateway.bootstrap import create_app
from cic_gateway.domain.keys import generate_key
from cic_gateway.settings import GatewaySettings
from cic_provisioner.adapters.catalog import CatalogDirectory
from cic_provisioner.entrypoints.prices import PriceResponder
from conftest import Servers
from support import published


class Gateway:
    def __init__(self, client: httpx.AsyncClient, admin_key: str) -> None:
        self.client = client
        self.admin = {"Authorization": f"Bearer {admin_key}"}

    async def user_key(self, **body: object) -> dict[str, str]:
        created = await self.client.post(
            "/admin/keys", json={"name": "u", **body}, headers=self.admin
        )
        assert created.status_code == 201, created.text
        return {"Authorization": f"Bearer {created.json()['key']}"}


@pytest.fixture
async def gateway(servers: Servers, database: str) -> AsyncIterator[Gateway]:
    admin_key, _ = generate_key()
    settings = GatewaySettings(
        nats_url=servers.nats_url,
        postgres_dsn=database,
        redis_url=servers.redis_url,
        admin_key=admin_key,
        max_body_bytes=4096,
        key_cache_seconds=0,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield Gateway(client, admin_key)


def error_of(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, object] = body["error"]
    assert isinstance(error["message"], str)
    assert error["message"]
    return error


CHAT = {"model": "nothing-here", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nonsense"}, {"Authorization": "Basic abc"},
     {"Authorization": f"Bearer {generate_key()[0]}"}],
)  # fmt: skip
async def test_requests_without_a_valid_key_get_401(
    gateway: Gateway, headers: dict[str, str]
) -> None:
    response = await gateway.client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert response.status_code == 401
    error_of(response)


async def test_admin_routes_refuse_user_keys(gateway: Gateway) -> None:
    user = await gateway.user_key()
    for method, path in (("GET", "/admin/deployments"), ("POST", "/admin/keys"),
                         ("GET", "/admin/nodes"), ("DELETE", "/admin/deployments/d1")):  # fmt: skip
        response = await gateway.client.request(method, path, headers=user, json={})
        assert response.status_code == 403, (method, path)
        assert error_of(response)["code"] == "admin_only"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"[]", 400),
        (b'{"messages": []}', 400),
        (b'{"model": 7}', 400),
        (b'{"model": "m", "stream": "yes"}', 400),
        (b'{"model": "m", "max_tokens": 1000000}', 400),
        (b'{"model": "m", "max_tokens": 0}', 400),
        (b'{"model": "m", "max_tokens": "10"}', 400),
        (b'{"model": "m", "n": 17}', 400),
        (b'{"model": "m", "pad": "' + b"x" * 5000 + b'"}', 413),
    ],
)
async def test_malformed_completions_get_a_clear_error(
    gateway: Gateway, body: bytes, status: int
) -> None:
    user = await gateway.user_key()
    response = await gateway.client.post(
        "/v1/chat/completions", content=body, headers={**user, "Content-Type": "application/json"}
    )
    assert response.status_code == status
    error_of(response)


async def test_an_unknown_model_is_404_and_a_model_without_replicas_is_503(
    gateway: Gateway,
) -> None:
    user = await gateway.user_key()
    missing = await gateway.client.post("/v1/chat/completions", json=CHAT, headers=user)
    assert missing.status_code == 404
    assert error_of(missing)["code"] == "model_not_found"

    created = await gateway.client.post(
        "/admin/deployments", json={"model": "warming-up", "replicas": 1}, headers=gateway.admin
    )
    assert created.status_code == 201
    waiting = await gateway.client.post(
        "/v1/chat/completions", json={**CHAT, "model": "warming-up"}, headers=user
    )
    assert waiting.status_code == 503
    assert int(waiting.headers["Retry-After"]) > 0


async def test_a_key_limited_to_some_models_is_refused_others(gateway: Gateway) -> None:
    user = await gateway.user_key(allowed_models=["only-this"])
    response = await gateway.client.post("/v1/chat/completions", json=CHAT, headers=user)
    assert response.status_code == 403
    assert error_of(response)["code"] == "model_not_allowed"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"model": "m", "replicas": -1},
        {"model": "m", "replicas": 1, "unknown_field": True},
        {"model": "has space"},
        {"model": "m", "name": "Bad_Name"},
        {"model": "m", "accelerator": "H100"},
    ],
)
async def test_invalid_deployments_are_refused_and_nothing_is_stored(
    gateway: Gateway, body: dict[str, object]
) -> None:
    before = (await gateway.client.get("/admin/deployments", headers=gateway.admin)).json()
    response = await gateway.client.post("/admin/deployments", json=body, headers=gateway.admin)
    assert response.status_code == 400
    error_of(response)
    after = (await gateway.client.get("/admin/deployments", headers=gateway.admin)).json()
    assert after == before


async def test_create_scale_and_delete_announce_each_generation(gateway: Gateway, bus: Bus) -> None:
    admin = gateway.admin
    created = await gateway.client.post(
        "/admin/deployments", json={"model": "lifecycle", "replicas": 1}, headers=admin
    )
    dep_id = created.json()["id"]
    scaled = await gateway.client.patch(
        f"/admin/deployments/{dep_id}", json={"replicas": 3}, headers=admin
    )
    assert scaled.status_code == 200
    assert scaled.json()["replicas"] == 3
    deleted = await gateway.client.delete(f"/admin/deployments/{dep_id}", headers=admin)
    assert deleted.status_code == 202
    again = await gateway.client.delete(f"/admin/deployments/{dep_id}", headers=admin)
    assert again.status_code == 202  # idempotent, and announced under the same message id
    assert await published(bus, f"cic.deployment-changed.{dep_id}") == 3
    missing = await gateway.client.patch(
        "/admin/deployments/dnothing", json={"replicas": 1}, headers=admin
    )
    assert missing.status_code == 404


async def test_a_revoked_key_stops_working(gateway: Gateway) -> None:
    user = await gateway.user_key(name="to-revoke")
    assert (await gateway.client.get("/v1/models", headers=user)).status_code == 200
    keys = (await gateway.client.get("/admin/keys", headers=gateway.admin)).json()["data"]
    key_id = next(k["id"] for k in keys if k["name"] == "to-revoke")
    revoked = await gateway.client.delete(f"/admin/keys/{key_id}", headers=gateway.admin)
    assert revoked.status_code == 204
    assert (await gateway.client.get("/v1/models", headers=user)).status_code == 401


async def test_prices_come_from_the_provisioners_catalogs(
    gateway: Gateway, bus: Bus, tmp_path: Path
) -> None:
    no_answer = await gateway.client.get("/admin/prices?gpu=H100", headers=gateway.admin)
    assert no_answer.status_code == 503
    (tmp_path / "lambda").mkdir()
    (tmp_path / "lambda" / "vms.csv").write_text(
        "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,Region,GpuInfo,"
        "SpotPrice\ngpu_8x_h100,H100,8.0,208.0,1800.0,23.92,us-east-1,,\n"
        "gpu_8x_h100,H100,8.0,208.0,1800.0,24.50,us-west-1,,\n"
    )
    responder = PriceResponder(CatalogDirectory(tmp_path))
    sub = await bus.nc.subscribe(PRICES_SUBJECT, cb=responder.on_request)
    try:
        answer = await gateway.client.get(
            "/admin/prices", params={"gpu": "H100", "count": 8}, headers=gateway.admin
        )
        bad = await gateway.client.get("/admin/prices?gpu=H100&count=0", headers=gateway.admin)
    finally:
        await sub.unsubscribe()
    assert answer.status_code == 200
    assert [(o["region"], o["on_demand_per_hour"]) for o in answer.json()["data"]] == [
        ("us-east-1", 23.92),
        ("us-west-1", 24.5),
    ]
    assert answer.json()["clouds"] == ["lambda"]
    assert bad.status_code == 400
    error_of(bad)


async def test_changing_what_nodes_run_bumps_the_revision_and_scaling_does_not(
    gateway: Gateway,
) -> None:
    admin = gateway.admin
    created = await gateway.client.post(
        "/admin/deployments", json={"model": "rolling", "replicas": 1}, headers=admin
    )
    dep_id = created.json()["id"]
    assert created.json()["revision"] == 1
    scaled = await gateway.client.patch(
        f"/admin/deployments/{dep_id}", json={"replicas": 2}, headers=admin
    )
    assert (scaled.json()["revision"], scaled.json()["replicas"]) == (1, 2)
    same = await gateway.client.patch(
        f"/admin/deployments/{dep_id}", json={"model": "rolling"}, headers=admin
    )
    assert same.json()["revision"] == 1
    changed = await gateway.client.patch(
        f"/admin/deployments/{dep_id}",
        json={"model": "rolling-v2", "engine_args": ["--enforce-eager"]},
        headers=admin,
    )
    assert changed.json()["revision"] == 2
    assert changed.json()["engine_args"] == ["--enforce-eager"]
    for bad in ({}, {"model": "has space"}, {"replicas": 1, "name": "x"}):
        refused = await gateway.client.patch(
            f"/admin/deployments/{dep_id}", json=bad, headers=admin
        )
        assert refused.status_code == 400, bad


async def test_reconcile_reports_are_listed_newest_first(gateway: Gateway) -> None:
    listed = await gateway.client.get("/admin/reconcile/reports?limit=5", headers=gateway.admin)
    assert listed.status_code == 200
    ats = [r["at"] for r in listed.json()["data"]]
    assert ats == sorted(ats, reverse=True)
    too_many = await gateway.client.get(
        "/admin/reconcile/reports?limit=9999", headers=gateway.admin
    )
    assert too_many.status_code == 400
