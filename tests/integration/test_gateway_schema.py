"""Schemathesis over every operation of the gateway's OpenAPI, as an admin, as a user and
with no valid key: no answer is a server error, every error is in OpenAI's shape, and
answers conform to the schema wherever it describes them.

The gateway runs on real PostgreSQL, Redis and NATS with a simulator engine behind it and
a price responder beside it, in a thread and event loop of its own: schemathesis calls
it synchronously, which the tests' own loop could not answer while blocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import queue
import secrets
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from cic_common.bus import Bus
from cic_common.replicas import Replica, ReplicaTable
from cic_common.streams import PRICES_SUBJECT
from cic_gateway.bootstrap import BOOTSTRAP_ADMIN_ID, create_app
from cic_gateway.domain.keys import generate_key
from cic_gateway.settings import GatewaySettings
from cic_local.infra import create_database, drop_database
from cic_provisioner.adapters.catalog import CatalogDirectory
from cic_provisioner.entrypoints.prices import PriceResponder
from conftest import Servers
from hypothesis import HealthCheck, settings
from redis.asyncio import Redis
from schemathesis import CheckFunction, Response, checks
from support import serving, sim_engine

Case = schemathesis.Case[Any]

MODEL = "schema-model"
EXAMPLES = 30
"""Hypothesis examples per operation with a valid key: the whole run stays under a minute."""
EXAMPLES_WITHOUT_KEY = 10
"""Fewer without one: every such request is refused before its data is looked at."""
ADMIN_KEY, _ = generate_key()
USER_KEY, USER_PARSED = generate_key()
USER_KEY_ID = "kschemauser"
PROTECTED_KEYS = {BOOTSTRAP_ADMIN_ID, USER_KEY_ID}
"""The keys the run itself uses: generated requests must not revoke them."""
_COUNTS = ("max_tokens", "max_completion_tokens", "n")


@contextlib.asynccontextmanager
async def _engine() -> AsyncIterator[str]:
    async with sim_engine(MODEL) as process:
        yield process.base_url


@contextlib.asynccontextmanager
async def _prices(nats_url: str, catalogs: Path) -> AsyncIterator[None]:
    (catalogs / "lambda").mkdir()
    (catalogs / "lambda" / "vms.csv").write_text(
        "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,Region,GpuInfo,"
        "SpotPrice\ngpu_1x_a10,A10,1.0,30.0,200.0,0.75,us-east-1,,\n"
    )
    bus = await Bus.connect(nats_url, producer="test")
    responder = PriceResponder(CatalogDirectory(catalogs))
    sub = await bus.nc.subscribe(PRICES_SUBJECT, cb=responder.on_request)
    try:
        yield
    finally:
        await sub.unsubscribe()
        await bus.close()


async def _run(
    servers: Servers, catalogs: Path, ready: queue.Queue[str | BaseException], stop: asyncio.Event
) -> None:
    """Serve the gateway on a database of its own until ``stop``; its URL goes to ``ready``."""
    name = f"cic_schema_{secrets.token_hex(4)}"
    database = await create_database(servers.postgres_url, name)
    redis = Redis.from_url(servers.redis_url)
    table = ReplicaTable(redis)
    try:
        async with _engine() as engine_url, _prices(servers.nats_url, catalogs):
            await table.apply([Replica(node_id="nschema", deployment_id="dschema", model=MODEL,
                                       endpoint=engine_url)], [])  # fmt: skip
            app = create_app(GatewaySettings(
                nats_url=servers.nats_url, postgres_dsn=database, redis_url=servers.redis_url,
                admin_key=ADMIN_KEY, max_body_bytes=64 * 1024, key_cache_seconds=0,
            ))  # fmt: skip
            async with serving(app) as base_url:
                await app.state.keys.ensure(USER_KEY_ID, USER_PARSED, "schema user", "user")
                ready.put(base_url)
                await stop.wait()
    except BaseException as exc:
        ready.put(exc)
        raise
    finally:
        await table.apply([], ["nschema"])
        await redis.aclose()
        await drop_database(servers.postgres_url, name)


@pytest.fixture(scope="module")
def base_url(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    ready: queue.Queue[str | BaseException] = queue.Queue()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    catalogs = tmp_path_factory.mktemp("catalogs")
    thread = threading.Thread(
        target=lambda: loop.run_until_complete(_run(servers, catalogs, ready, stop)), daemon=True
    )
    thread.start()
    try:
        started = ready.get(timeout=120)
        if isinstance(started, BaseException):
            raise started
        yield started
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(60)
        loop.close()


def _document() -> dict[str, Any]:
    """The OpenAPI document (made without connecting anything)."""
    unused = "unused://"
    app = create_app(GatewaySettings(nats_url=unused, postgres_dsn=unused, redis_url=unused))
    return app.openapi()


def _schema(key: str | None) -> schemathesis.BaseSchema:
    """The API as one caller sees it: with ``key``, or with whatever schemathesis makes up."""
    schema = schemathesis.openapi.from_dict(copy.deepcopy(_DOCUMENT))
    if key is not None:
        schema.config.update(headers={"Authorization": f"Bearer {key}"})
    examples = EXAMPLES if key is not None else EXAMPLES_WITHOUT_KEY
    schema.config.generation.update(max_examples=examples)
    return schema


_DOCUMENT = _document()


@schemathesis.pytest.parametrize(
    admin=_schema(ADMIN_KEY), user=_schema(USER_KEY), anonymous=_schema(None)
)
@settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_operation_answers_every_caller_within_the_schema(case: Case, base_url: str) -> None:
    if case.path_parameters and case.path_parameters.get("key_id") in PROTECTED_KEYS:
        case.path_parameters["key_id"] = "knosuchkey000"
    # Server errors are checked below, where a 503 may be right.
    excluded: list[CheckFunction] = [checks.not_a_server_error]
    if _refused_beyond_the_schema(case):
        excluded.append(checks.positive_data_acceptance)
    response = case.call_and_validate(base_url=base_url, excluded_checks=excluded)
    _assert_no_server_error_and_openai_errors(response, not_ready=case.path.startswith("/v1/"))
    if case.method == "POST" and case.path.startswith("/v1/") and isinstance(case.body, dict):
        # The same request for the model that has a replica: through to the engine.
        case.body = {**case.body, "model": MODEL}
        response = case.call(base_url=base_url)
        _assert_no_server_error_and_openai_errors(response, not_ready=False)
        excluded = [checks.negative_data_rejection, checks.positive_data_acceptance]
        if response.status_code >= 400 and "x-cic-replica" in response.headers:
            # An engine's refusal is relayed as it is, and engines (vLLM, the simulator)
            # give their status as an integer `code` where OpenAI has a string.
            excluded.append(checks.response_schema_conformance)
        case.validate_response(response, excluded_checks=excluded)


def _refused_beyond_the_schema(case: Case) -> bool:
    """Whether the body breaks a rule the schema cannot state, so that a 400 is right
    although it conforms: JSON Schema holds 2.0 to be the integer 2 (OpenAI's API, and
    so the gateway, do not), and it compares no two fields (a deployment's replicas lie
    between its min_replicas and max_replicas)."""
    if not isinstance(case.body, dict):
        return False
    body: dict[str, Any] = case.body
    if case.path.startswith("/v1/"):
        return any(isinstance(body.get(field), float) for field in _COUNTS)
    if (case.method, case.path) == ("POST", "/admin/deployments"):
        replicas = body.get("replicas", 1)
        low, high = body.get("min_replicas"), body.get("max_replicas")
        try:
            low = replicas if low is None else low
            return not low <= replicas <= (replicas if high is None else high)
        except TypeError:  # not numbers: not a schema-valid body either
            return False
    return False


def _assert_no_server_error_and_openai_errors(response: Response, *, not_ready: bool) -> None:
    """No server error (but, with ``not_ready``, the 503 and Retry-After of a model that
    is deployed and has no replica ready: the admin runs deploy what they make up), and
    every error in OpenAI's shape."""
    if not_ready and response.status_code == 503:
        assert [int(v) >= 1 for v in response.headers["retry-after"]] == [True], response.headers
    else:
        assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code < 400:
        return
    body = response.json()
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert isinstance(body["error"]["message"], str), body
    assert body["error"]["message"], body
    assert isinstance(body["error"]["type"], str), body
