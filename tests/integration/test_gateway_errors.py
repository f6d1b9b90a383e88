"""The gateway's refusals as the official ``openai`` client sees them: each status the
API promises maps to the client's exception for it, with OpenAI's code and param, and a
Retry-After where waiting helps. (test_gateway_api.py checks the same statuses on the
wire; 429 through the client is in test_gateway_routing.py, 504 in test_gateway_lane.py.)"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import openai
import pytest
from cic_gateway.bootstrap import create_app
from cic_gateway.domain.keys import generate_key
from cic_gateway.settings import GatewaySettings
from conftest import Servers
from openai.types.chat import ChatCompletionMessageParam

MAX_BODY = 4096
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


@dataclass
class Gateway:
    http: httpx.AsyncClient
    admin: dict[str, str]

    async def client(self, **key: object) -> openai.AsyncOpenAI:
        """The official client with a new user key (``key``: its allowed models and limits)."""
        created = await self.http.post("/admin/keys", json={"name": "errors", **key},
                                       headers=self.admin)  # fmt: skip
        assert created.status_code == 201, created.text
        return self.anonymous(created.json()["key"])

    def anonymous(self, api_key: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url="http://gw/v1", api_key=api_key, max_retries=0,
            http_client=self.http,  # type: ignore[arg-type]  # the SDK types its own httpx fork
        )  # fmt: skip


@pytest.fixture
async def gateway(servers: Servers, database: str) -> AsyncIterator[Gateway]:
    admin_key, _ = generate_key()
    settings = GatewaySettings(
        nats_url=servers.nats_url, postgres_dsn=database, redis_url=servers.redis_url,
        admin_key=admin_key, max_body_bytes=MAX_BODY, key_cache_seconds=0,
    )  # fmt: skip
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            yield Gateway(http, {"Authorization": f"Bearer {admin_key}"})


def _unknown_model() -> str:
    return f"errors-{secrets.token_hex(4)}"


@pytest.mark.parametrize(("field", "value"), [("max_tokens", 0), ("n", 17)])
async def test_an_invalid_request_is_a_bad_request_naming_its_param(
    gateway: Gateway, field: str, value: int
) -> None:
    client = await gateway.client()
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(
            model=_unknown_model(), messages=HELLO, extra_body={field: value}
        )
    assert refused.value.status_code == 400
    assert refused.value.param == field
    assert refused.value.type == "invalid_request_error"


@pytest.mark.parametrize("api_key", ["nonsense", generate_key()[0]])
async def test_a_bad_key_is_an_authentication_error(gateway: Gateway, api_key: str) -> None:
    client = gateway.anonymous(api_key)
    with pytest.raises(openai.AuthenticationError) as refused:
        await client.models.list()
    assert refused.value.status_code == 401
    assert refused.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        await client.completions.create(model=_unknown_model(), prompt="hi")


async def test_a_model_the_key_may_not_use_is_a_permission_error(gateway: Gateway) -> None:
    client = await gateway.client(allowed_models=["only-this"])
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await client.embeddings.create(model=_unknown_model(), input="hi")
    assert refused.value.status_code == 403
    assert refused.value.code == "model_not_allowed"


async def test_an_unknown_model_is_not_found(gateway: Gateway) -> None:
    client = await gateway.client()
    with pytest.raises(openai.NotFoundError) as refused:
        await client.chat.completions.create(model=_unknown_model(), messages=HELLO)
    assert refused.value.status_code == 404
    assert refused.value.code == "model_not_found"


async def test_a_body_over_the_limit_is_too_large(gateway: Gateway) -> None:
    client = await gateway.client()
    big: list[ChatCompletionMessageParam] = [{"role": "user", "content": "x" * MAX_BODY}]
    with pytest.raises(openai.APIStatusError) as refused:
        await client.chat.completions.create(model=_unknown_model(), messages=big)
    assert refused.value.status_code == 413
    assert refused.value.type == "invalid_request_error"


async def test_a_model_without_a_ready_replica_is_unavailable_with_retry_after(
    gateway: Gateway,
) -> None:
    model = _unknown_model()
    created = await gateway.http.post("/admin/deployments", json={"model": model, "replicas": 1},
                                      headers=gateway.admin)  # fmt: skip
    assert created.status_code == 201, created.text
    client = await gateway.client()
    with pytest.raises(openai.InternalServerError) as refused:
        await client.chat.completions.create(model=model, messages=HELLO)
    assert refused.value.status_code == 503
    assert refused.value.type == "service_unavailable"
    assert int(refused.value.response.headers["retry-after"]) >= 1
