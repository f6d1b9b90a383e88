"""Admin routes refuse user keys, every route refuses forged tokens, no key raises its limits."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from chaos_harness import FIGURES, Scenario
from cic_common.processes import free_port
from cic_common.replicas import Replica, ReplicaTable
from cic_gateway.bootstrap import BOOTSTRAP_ADMIN_ID, create_app
from cic_gateway.domain.keys import generate_key
from cic_gateway.serving import GatewayHttpProtocol
from cic_gateway.settings import GatewaySettings
from cic_local.infra import create_database, drop_database
from conftest import Servers
from redis.asyncio import Redis
from support import eventually, sim_engine

pytestmark = pytest.mark.chaos

MODEL = "security-model"
NODE = "nsecurity"
MAX_BODY = 16 * 1024
"""Small, so an oversized body fits the socket buffers and an early refusal resets nothing."""
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
HELLO = [{"role": "user", "content": "hello"}]
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/admin/keys"): {"name": "escalated", "scope": "admin"},
    ("POST", "/admin/deployments"): {"model": "escalated-model", "replicas": 1},
    ("PATCH", "/admin/deployments/{deployment_id}"): {"replicas": 7},
    ("POST", "/v1/chat/completions"): {"model": MODEL, "messages": HELLO, "max_tokens": 1},
    ("POST", "/v1/completions"): {"model": MODEL, "prompt": "hello", "max_tokens": 1},
    ("POST", "/v1/embeddings"): {"model": MODEL, "input": "hello"},
}
"""Valid bodies: a route that forgot its check would carry the request out, not refuse it."""
_TRACE = re.compile(r'Traceback|File "|\b(?:[a-z_]\w*\.)+[A-Z]\w*(?:Error|Exception|Violation)\b')


@dataclass
class Gateway:
    http: httpx.AsyncClient
    port: int
    admin_key: str
    user_key: str
    user_id: str
    deployment_id: str

    @property
    def secrets(self) -> dict[str, str]:
        """What no answer may carry."""
        return {"admin key": self.admin_key, "user secret": self.user_key.split("-", 2)[2]}

    def auth(self, key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"} if key else {}

    def url(self, path: str, operation: dict[str, Any] | None = None) -> str:
        """``path`` with real ids in it, and any required query parameter."""
        ids = {"deployment_id": self.deployment_id, "key_id": self.user_id}
        url = re.sub(r"\{(\w+)\}", lambda m: ids.get(m[1], "nsecurity1"), path)
        params = (operation or {}).get("parameters", [])
        query = "&".join(f"{p['name']}=1" for p in params if p["in"] == "query" and p["required"])
        return f"{url}?{query}" if query else url


@dataclass
class Tally:
    """One scenario's answers: how many, which were server errors or leaked something, and
    which were not what the scenario expects."""

    name: str
    secrets: dict[str, str]
    """What no answer may carry, by name."""
    sent: int = 0
    leaks: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)

    def check(self, what: str, status: int, body: bytes, expected: bool = True) -> None:
        self.sent += 1
        text = body.decode(errors="replace")
        found = [name for name, secret in self.secrets.items() if secret in text]
        if status >= 500 or _TRACE.search(text) or found:
            self.leaks.append(f"{what}: {status} {found} {text[:200]}")
        if not expected:
            self.wrong.append(f"{what}: {status} {text[:120]}")

    def conclude(self, notes: str) -> None:
        """Record the figures (failed: server errors and leaks), then judge."""
        FIGURES.record(Scenario(f"security: {self.name}", requests_sent=self.sent,
                                requests_failed=len(self.leaks), notes=notes))  # fmt: skip
        assert self.leaks == []
        assert self.wrong == []


def openai_error(body: bytes | str) -> dict[str, Any] | None:
    """The ``error`` of a body in OpenAI's error shape; None for any other body."""
    with contextlib.suppress(ValueError):
        error = json.loads(body)
        error = error["error"] if isinstance(error, dict) and set(error) == {"error"} else None
        if isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}:
            return error
    return None


@contextlib.asynccontextmanager
async def _served(app: Any) -> AsyncIterator[int]:
    """``app`` as production serves it: uvicorn with the gateway's own HTTP lane."""
    port = free_port()
    config = uvicorn.Config(app, port=port, log_level="warning", ws="none",
                            http=GatewayHttpProtocol)  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        return server.started or task.done()

    try:
        await eventually(started)
        assert server.started, "the gateway did not start"
        yield port
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def security_gateway(servers: Servers) -> AsyncIterator[Gateway]:
    """A gateway served as in production, on real PostgreSQL, Redis and NATS, with a
    simulator replica of MODEL, a user key and a deployment (test_security_input.py
    starts one of its own with this)."""
    name = f"cic_security_{secrets.token_hex(4)}"
    database = await create_database(servers.postgres_url, name)
    table = ReplicaTable(redis := Redis.from_url(servers.redis_url))
    admin_key, _ = generate_key()
    app = create_app(GatewaySettings(
        nats_url=servers.nats_url, postgres_dsn=database, redis_url=servers.redis_url,
        admin_key=admin_key, max_body_bytes=MAX_BODY, key_cache_seconds=0,
    ))  # fmt: skip

    async def routed() -> bool:
        return bool(app.state.replicas.replicas(MODEL))

    try:
        async with sim_engine(MODEL) as engine, _served(app) as port:
            await table.apply([Replica(node_id=NODE, deployment_id="dsecurity", model=MODEL,
                                       endpoint=engine.base_url)], [])  # fmt: skip
            await eventually(routed)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                admin = {"Authorization": f"Bearer {admin_key}"}
                user = (await http.post("/admin/keys", json={"name": "user"}, headers=admin)).json()
                made = await http.post("/admin/deployments", json={"model": MODEL}, headers=admin)
                yield Gateway(http, port, admin_key, user["key"], user["id"], made.json()["id"])
    finally:
        await table.apply([], [NODE])
        await redis.aclose()
        await drop_database(servers.postgres_url, name)


@pytest.fixture(scope="module")
async def gateway(servers: Servers) -> AsyncIterator[Gateway]:
    async with security_gateway(servers) as served:
        yield served


async def operations(gateway: Gateway) -> list[tuple[str, str, dict[str, Any]]]:
    """Every operation of the app's own OpenAPI document: method, path, description."""
    document = (await gateway.http.get("/openapi.json")).json()
    return [(m.upper(), path, op) for path, ops in document["paths"].items()
            for m, op in ops.items()]  # fmt: skip


async def test_every_admin_operation_refuses_a_user_key_and_a_caller_without_one(
    gateway: Gateway,
) -> None:
    # The admin API is whatever the document lists outside /v1/: a route added without
    # the admin check is caught here without anyone updating a list.
    admin = {(m, p): op for m, p, op in await operations(gateway) if not p.startswith("/v1/")}
    paths = {p: op for (_, p), op in admin.items()}
    assert {"/admin/keys", "/admin/deployments"} <= set(paths)
    tally = Tally("admin routes refuse user keys", gateway.secrets)
    for path, operation in paths.items():
        for method in METHODS:  # undocumented methods too: PATCH of a key, PUT of anything
            body = BODIES.get((method, path), {"scope": "admin", "rpm_limit": None})
            for key, status, code in ((gateway.user_key, 403, "admin_only"), (None, 401, None)):
                if (method, path) not in admin:
                    status, code = 405, None
                answer = await gateway.http.request(
                    method, gateway.url(path, operation), headers=gateway.auth(key),
                    json=body if method in ("POST", "PUT", "PATCH") else None,
                )  # fmt: skip
                error = openai_error(answer.content)
                found = (answer.status_code, error["code"] if error else "not OpenAI's shape")
                what = f"{method} {path} {'user key' if key else 'no key'}"
                tally.check(what, answer.status_code, answer.content, found == (status, code))
    tally.conclude(f"{len(paths)} paths x {len(METHODS)} methods ({len(admin)} documented)")
    # Nothing the refused calls asked for happened: no new key or deployment, no change.
    admin_auth = gateway.auth(gateway.admin_key)
    keys = (await gateway.http.get("/admin/keys", headers=admin_auth)).json()["data"]
    assert [k["id"] for k in keys if k["scope"] == "admin"] == [BOOTSTRAP_ADMIN_ID]
    assert "escalated" not in [k["name"] for k in keys]
    user = next(k for k in keys if k["id"] == gateway.user_id)
    assert (user["scope"], user["revoked_at"], user["rpm_limit"]) == ("user", None, None)
    listed = await gateway.http.get("/admin/deployments", headers=admin_auth)
    deployments = [(d["id"], d["replicas"], d["deleted_at"]) for d in listed.json()["data"]]
    assert deployments == [(gateway.deployment_id, 1, None)]


async def test_a_user_key_cannot_raise_its_own_limits_scope_or_models(gateway: Gateway) -> None:
    admin_auth = gateway.auth(gateway.admin_key)
    limited = {"name": "limited", "allowed_models": [MODEL], "rpm_limit": 2}
    created = (await gateway.http.post("/admin/keys", json=limited, headers=admin_auth)).json()
    # What an admin sets on a key, claimed by the key's own requests in body and headers.
    claims = {"scope": "admin", "allowed_models": None, "rpm_limit": 10**6, "tpm_limit": None,
              "key_id": BOOTSTRAP_ADMIN_ID, "user": BOOTSTRAP_ADMIN_ID}  # fmt: skip
    headers = {**gateway.auth(created["key"]), "X-Cic-Scope": "admin",
               "X-Cic-Key-Id": BOOTSTRAP_ADMIN_ID, "X-Api-Key-Scope": "admin"}  # fmt: skip
    tally = Tally("user keys cannot raise their limits", gateway.secrets)
    other = await gateway.http.post(
        "/v1/chat/completions",
        headers=headers,
        json={**claims, "model": "security-other", "messages": HELLO},
    )
    refused = (other.status_code, (openai_error(other.content) or {}).get("code"))
    tally.check("another model", other.status_code, other.content,
                refused == (403, "model_not_allowed"))  # fmt: skip
    models = await gateway.http.get("/v1/models", headers=headers)
    listed = [m["id"] for m in models.json()["data"]]
    tally.check("models", models.status_code, models.content, listed == [MODEL])
    statuses = []
    for _ in range(3):
        body = {**BODIES[("POST", "/v1/chat/completions")], **claims}
        answer = await gateway.http.post("/v1/chat/completions", json=body, headers=headers)
        tally.check("chat", answer.status_code, answer.content)
        statuses.append(answer.status_code)
    tally.conclude("a key of 2 requests a minute and one model claims admin's in body and headers")
    assert statuses == [200, 200, 429]
    keys = (await gateway.http.get("/admin/keys", headers=admin_auth)).json()["data"]
    after = next(k for k in keys if k["id"] == created["id"])
    kept = {k: after[k] for k in ("scope", "allowed_models", "rpm_limit", "tpm_limit")}
    assert kept == {"scope": "user", "allowed_models": [MODEL], "rpm_limit": 2, "tpm_limit": None}


async def test_forged_bearer_tokens_are_unauthenticated_on_every_route(gateway: Gateway) -> None:
    admin_prefix = gateway.admin_key.split("-")[1]
    forged = [
        ("Bearer", "' OR '1'='1"),
        ("Bearer", "cic-000000000000-' OR 1=1; --aaaaaaaaaa"),
        ("Bearer", f"cic-{gateway.user_key.split('-')[1]}-' OR ''='aaaaaaaaaaaa"),
        ("Bearer", f"cic-{admin_prefix}-%%%%%%%%%%%%%%%%%%%%"),  # LIKE wildcards
        ("Bearer", f"{gateway.admin_key}'--"),  # the admin key, then an SQL comment
        ("Bearer", '{"scope": "admin", "id": "admin-bootstrap"}'),
        ("Bearer", f'cic-{admin_prefix}-{{"$ne": null}}aaaaaaaa'),
        ("Bearer", f"cic-{admin_prefix}-" + "a" * 5000),
        ("Basic", base64.b64encode(f"{gateway.admin_key}:".encode()).decode()),
        ("Token", gateway.admin_key),  # a real key under another scheme
    ]
    tally = Tally("forged bearer tokens", gateway.secrets)
    for method, path, operation in await operations(gateway):
        for scheme, token in forged:
            answer = await gateway.http.request(
                method, gateway.url(path, operation), json=BODIES.get((method, path)),
                headers={"Authorization": f"{scheme} {token}"},
            )  # fmt: skip
            refused = answer.status_code == 401 and openai_error(answer.content) is not None
            what = f"{method} {path} {scheme} {token[:30]!r}"
            tally.check(what, answer.status_code, answer.content, refused)
    tally.conclude(f"SQL, JSON, wildcards and other schemes; {len(forged)} per operation")
