"""Wires the gateway: one FastAPI app over a database pool, Redis, NATS and the replicas."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

from cic_common.bus import Bus
from cic_common.db import create_pool, migrate
from cic_common.events import UsageRecorded
from cic_common.scripts import close_scripts
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from redis.asyncio import Redis
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from cic_gateway.adapters.keys import KeyStore
from cic_gateway.adapters.limits import RateLimiter
from cic_gateway.adapters.replica_view import ReplicaView
from cic_gateway.adapters.store import DeploymentStore
from cic_gateway.adapters.suspects import Suspicions
from cic_gateway.adapters.upstream import UpstreamClient
from cic_gateway.adapters.usage import UsageMeter, UsageStore
from cic_gateway.domain.errors import ApiError, ErrorBody, error_body
from cic_gateway.domain.keys import parse_key
from cic_gateway.domain.retry_budget import RetryBudget
from cic_gateway.domain.routing import policy_named
from cic_gateway.entrypoints import admin, openai_api
from cic_gateway.entrypoints.fast_path import GatewayApp, error_response
from cic_gateway.settings import GatewaySettings

__all__ = ["create_app"]

log = logging.getLogger(__name__)
BOOTSTRAP_ADMIN_ID = "admin-bootstrap"


def create_app(settings: GatewaySettings) -> FastAPI:
    """The app; connections are made in its lifespan, not here."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(settings.postgres_dsn)
        await migrate(pool)
        redis = Redis.from_url(settings.redis_url)
        bus = await Bus.connect(
            settings.nats_url, producer=f"gateway/{settings.instance_id}", update_streams=False
        )
        upstream = UpstreamClient(
            settings.upstream_connect_timeout, settings.upstream_timeout,
            probe_after=settings.probe_after, probe_timeout=settings.probe_timeout,
        )  # fmt: skip
        app.state.settings = settings
        app.state.deployments = DeploymentStore(pool)
        app.state.keys = KeyStore(pool, settings.key_cache_seconds)
        app.state.replicas = ReplicaView(
            redis, refresh=settings.table_refresh, eject_for=settings.eject_for
        )
        await app.state.replicas.start()
        app.state.suspicions = Suspicions(bus, settings.instance_id)

        def stalled(node_id: str) -> None:
            app.state.replicas.eject(node_id)
            app.state.suspicions.report(node_id, "stopped answering its health check")

        await upstream.start(on_stalled=stalled)
        app.state.policy = policy_named(settings.routing_policy)
        app.state.retry_budget = RetryBudget(settings.retry_ratio)
        app.state.limiter = RateLimiter(redis)
        app.state.usage = UsageStore(pool)
        app.state.usage_meter = UsageMeter(bus, settings.instance_id)
        app.state.usage_meter.start()
        usage_consumer = bus.batch_consumer(
            UsageRecorded, "gateway-usage", app.state.usage.on_usage_recorded, batch=16,
            max_deliver=settings.max_deliver, linger=0.1,
        )  # fmt: skip
        consuming = asyncio.create_task(usage_consumer.run())
        app.state.bus = bus
        app.state.upstream = upstream
        if settings.admin_key:
            parsed = parse_key(settings.admin_key)
            if parsed is None:
                raise ValueError("CIC_ADMIN_KEY is not of the form cic-<12 hex>-<secret>")
            await app.state.keys.ensure(BOOTSTRAP_ADMIN_ID, parsed, "bootstrap admin", "admin")
        log.info("gateway ready", extra={"port": settings.port})
        try:
            yield
        finally:
            await app.state.usage_meter.drain()
            await app.state.limiter.drain()
            await app.state.suspicions.drain()
            usage_consumer.stop()
            await consuming
            await app.state.replicas.close()
            await upstream.close()
            await bus.close()
            await close_scripts(redis)
            await redis.aclose()
            await pool.close()

    traced = settings.otel_exporter != "none"
    app = GatewayApp(
        telemetry={"tracing": traced, "metrics": False, "logs": False},
        title="CIC gateway",
        description="OpenAI-compatible API and admin API of CrossLogic Inference Cloud",
        version="0.1.0",
        lifespan=lifespan,
        # Routes FastAPI serves read a body before the key is checked: without a limit an
        # anonymous client could make it buffer and parse any size (the proxied routes
        # have the same limit in ``read_body`` and the HTTP lane).
        max_body_size=settings.max_body_bytes,
    )
    # What the lifespan wires, read many times a request: plain attributes (Starlette's
    # State looks each one up through a Python method).
    app.state = SimpleNamespace()  # type: ignore[assignment]
    app.include_router(openai_api.router)
    app.include_router(admin.router)
    _install_error_handlers(app)
    _document_errors(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}"
            for e in exc.errors()
        ]
        return JSONResponse(error_body(400, "; ".join(problems)), 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method of the path, not just one route's
            headers["Allow"] = ", ".join(_allowed_methods(app, request))
        body = error_body(exc.status_code, str(exc.detail))
        return JSONResponse(body, exc.status_code, headers=headers)


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    methods: set[str] = set()
    for route in app.router.routes:
        if isinstance(route, Route) and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods or set()
    return sorted(methods)


def _document_errors(app: FastAPI) -> None:
    """Tell the OpenAPI document what the handlers above do: invalid requests are answered
    400 (not FastAPI's 422), and every status a route does not list is an error in
    OpenAI's shape too."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        error = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(error.pop("$defs", {}))
        schemas.setdefault(ErrorBody.__name__, error)
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        content = {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{ErrorBody.__name__}"}}
        }
        for operation in (op for path in document["paths"].values() for op in path.values()):
            responses = operation["responses"]
            responses.pop("422", None)
            if operation.get("parameters") or operation.get("requestBody"):
                responses.setdefault("400", {"description": "invalid request", "content": content})
            responses.setdefault("default", {"description": "an error", "content": content})
        return document

    app.openapi = openapi  # type: ignore[method-assign]
