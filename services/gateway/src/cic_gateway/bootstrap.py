"""Wires the gateway: one FastAPI app over a database pool, Redis, NATS and aiohttp."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from cic_common.bus import Bus
from cic_common.db import create_pool, migrate
from cic_common.events import UsageRecorded
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.asyncio import Redis
from starlette.exceptions import HTTPException as StarletteHTTPException

from cic_gateway.adapters.limits import RateLimiter
from cic_gateway.adapters.replica_view import ReplicaView
from cic_gateway.adapters.store import DeploymentStore, KeyStore
from cic_gateway.adapters.upstream import UpstreamClient
from cic_gateway.adapters.usage import UsageMeter, UsageStore
from cic_gateway.domain.errors import ApiError, error_body
from cic_gateway.domain.keys import parse_key
from cic_gateway.domain.retry_budget import RetryBudget
from cic_gateway.entrypoints import admin, openai_api
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
        bus = await Bus.connect(settings.nats_url, producer=f"gateway/{settings.instance_id}")
        upstream = UpstreamClient(settings.upstream_connect_timeout, settings.upstream_timeout)
        await upstream.start()
        app.state.settings = settings
        app.state.deployments = DeploymentStore(pool)
        app.state.keys = KeyStore(pool, settings.key_cache_seconds)
        app.state.replicas = ReplicaView(
            redis, refresh=settings.table_refresh, eject_for=settings.eject_for
        )
        await app.state.replicas.start()
        app.state.retry_budget = RetryBudget(settings.retry_ratio)
        app.state.limiter = RateLimiter(redis)
        app.state.usage = UsageStore(pool)
        app.state.usage_meter = UsageMeter(bus)
        usage_consumer = bus.consumer(UsageRecorded, "gateway-usage",
                                      app.state.usage.on_usage_recorded, concurrency=8,
                                      max_deliver=settings.max_deliver)  # fmt: skip
        consuming = asyncio.create_task(usage_consumer.run())
        app.state.bus = bus
        app.state.upstream = upstream
        app.state.rng = random.Random()
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
            usage_consumer.stop()
            await consuming
            await app.state.replicas.close()
            await upstream.close()
            await bus.close()
            await redis.aclose()
            await pool.close()

    app = FastAPI(
        title="CIC gateway",
        description="OpenAI-compatible API and admin API of CrossLogic Inference Cloud",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.include_router(openai_api.router)
    app.include_router(admin.router)
    _install_error_handlers(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        body = error_body(exc.status, exc.message, exc.code, exc.param)
        return JSONResponse(body, exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}"
            for e in exc.errors()
        ]
        return JSONResponse(error_body(400, "; ".join(problems)), 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(exc.status_code, str(exc.detail)), exc.status_code)
