"""The OpenAI-compatible API: authenticate, pick a replica, forward, retry elsewhere."""

from __future__ import annotations

import json
import logging
import time
from typing import Annotated, Any

from cic_common.ids import new_request_id
from fastapi import APIRouter, Depends, Request, Response

from cic_gateway.adapters.replica_view import ReplicaView
from cic_gateway.adapters.store import ApiKey
from cic_gateway.adapters.upstream import UpstreamTimeout, UpstreamUnavailable
from cic_gateway.domain.errors import ApiError
from cic_gateway.domain.metering import with_usage_requested
from cic_gateway.domain.retry_budget import RetryBudget
from cic_gateway.domain.routing import choose_replica
from cic_gateway.entrypoints.auth import require_key
from cic_gateway.entrypoints.relay import Metering, relay
from cic_gateway.settings import GatewaySettings

__all__ = ["router"]

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["openai"])
UserKey = Annotated[ApiKey, Depends(require_key)]


@router.get("/models")
async def list_models(request: Request, key: UserKey) -> dict[str, Any]:
    """The models that have a routable replica and that this key may use."""
    models = request.app.state.replicas.models()
    created = int(time.time())
    return {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": created, "owned_by": "cic"}
            for m in models
            if key.may_use(m)
        ],
    }


@router.post("/chat/completions")
async def chat_completions(request: Request, key: UserKey) -> Response:
    return await _proxy(request, key, "/v1/chat/completions")


@router.post("/completions")
async def completions(request: Request, key: UserKey) -> Response:
    return await _proxy(request, key, "/v1/completions")


@router.post("/embeddings")
async def embeddings(request: Request, key: UserKey) -> Response:
    return await _proxy(request, key, "/v1/embeddings")


async def _read_body(request: Request) -> tuple[bytes, dict[str, Any]]:
    limit: int = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body exceeds {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"request body exceeds {limit} bytes")
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise ApiError(400, "request body must be a JSON object")
    return bytes(body), parsed


async def _proxy(request: Request, key: ApiKey, path: str) -> Response:
    body, parsed = await _read_body(request)
    model = parsed.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "'model' is required and must be a string", param="model")
    if not isinstance(parsed.get("stream", False), bool):
        raise ApiError(400, "'stream' must be a boolean", param="stream")
    state = request.app.state
    _check_limits(parsed, state.settings)
    if not key.may_use(model):
        raise ApiError(403, f"this key may not use model {model!r}", code="model_not_allowed")
    if key.rpm_limit is not None:
        wait = await state.limiter.admit(key.id, key.rpm_limit)
        if wait:
            message = f"this key's limit of {key.rpm_limit} requests a minute is reached"
            raise ApiError(429, message, code="rate_limit_exceeded", retry_after=int(wait))
    view: ReplicaView = state.replicas
    replicas = view.replicas(model)
    if not replicas:
        if await state.deployments.serves(model):
            raise ApiError(503, f"no replica of {model!r} is ready", retry_after=5)
        raise ApiError(404, f"the model {model!r} does not exist", code="model_not_found")
    upstream_body = with_usage_requested(parsed)
    metering = Metering(new_request_id(), key.id, model, state.usage_meter,
                        strip_usage=upstream_body is not None)  # fmt: skip
    budget: RetryBudget = state.retry_budget
    budget.requested(time.monotonic())
    tried: set[str] = set()
    last: UpstreamUnavailable | None = None
    for attempt in range(state.settings.max_attempts):
        if attempt and not budget.may_retry(time.monotonic()):
            break
        replica = choose_replica(replicas, tried, state.rng, view.in_flight)
        if replica is None:
            break
        tried.add(replica.node_id)
        view.in_flight[replica.node_id] += 1
        try:
            upstream = await state.upstream.post(replica.endpoint + path, upstream_body or body)
        except UpstreamUnavailable as exc:
            view.in_flight[replica.node_id] -= 1
            view.eject(replica.node_id)
            last = exc
            log.warning("replica failed; trying another", extra={"node": replica.node_id})
            continue
        return await relay(upstream, replica.node_id, view, metering)
    if isinstance(last, UpstreamTimeout):
        raise ApiError(504, f"no replica of {model!r} answered in time: {last}")
    reason = str(last) if last else "no routable replica"
    raise ApiError(503, f"no replica of {model!r} answered: {reason}", retry_after=2)


def _check_limits(parsed: dict[str, Any], settings: GatewaySettings) -> None:
    """Refuse what no replica should be asked for: too many tokens or choices."""
    for field, limit in (
        ("max_tokens", settings.max_tokens),
        ("max_completion_tokens", settings.max_tokens),
        ("n", settings.max_n),
    ):
        value = parsed.get(field)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
            raise ApiError(400, f"'{field}' must be an integer from 1 to {limit}", param=field)
