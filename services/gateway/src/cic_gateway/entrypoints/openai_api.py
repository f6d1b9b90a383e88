"""The OpenAI-compatible API: authenticate, pick a replica, forward, retry elsewhere."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Annotated, Any

from cic_common.db import UNAVAILABLE
from cic_common.ids import new_request_id
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse

from cic_gateway.adapters.keys import ApiKey
from cic_gateway.adapters.limits import RateLimiter
from cic_gateway.adapters.replica_view import ReplicaView
from cic_gateway.domain.errors import ApiError, error_body
from cic_gateway.domain.metering import reserved_tokens, usage_asked, with_usage_requested
from cic_gateway.domain.routing import Policy, affinity_key
from cic_gateway.entrypoints.auth import require_key
from cic_gateway.entrypoints.dispatch import Dispatch, Metering
from cic_gateway.entrypoints.openai_schema import CHAT, COMPLETION, EMBEDDING, operation
from cic_gateway.entrypoints.relay import Answer, Forward, forward
from cic_gateway.settings import GatewaySettings

__all__ = ["PROXIED", "answer", "as_response", "error_answer", "proxy", "read_body", "router"]

PROXIED = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})
"""The routes whose requests go to a replica (see ``fast_path``)."""

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["openai"])
UserKey = Annotated[ApiKey, Depends(require_key)]


@router.get("/models")
async def list_models(request: Request, key: UserKey) -> dict[str, Any]:
    """The models that have a routable replica and that this key may use."""
    state = request.app.state
    models = [m for m in state.replicas.models()
              if key.may_use(m) and await _tenant_may_use(state, key, m)]  # fmt: skip
    created = int(time.time())
    return {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": created, "owned_by": "cic"}
                 for m in models],
    }  # fmt: skip


async def _tenant_may_use(state: Any, key: ApiKey, model: str) -> bool:
    """Whether the model is the key's tenant's (an operator's key may use any; a model no
    live deployment serves, still draining say, is no tenant's)."""
    if key.tenant is None:
        return True
    try:
        owner = await state.deployments.tenant_of(model)
    except UNAVAILABLE as exc:  # a model not asked about lately, while PostgreSQL is away
        raise ApiError(503, "models cannot be checked right now; retry shortly",
                       code="store_unavailable", retry_after=1) from exc  # fmt: skip
    return owner is None or owner == key.tenant


@router.post("/chat/completions", **operation(CHAT, streams=True))
async def chat_completions(request: Request, key: UserKey) -> Response:
    return await proxy(request, key, "/v1/chat/completions")


@router.post("/completions", **operation(COMPLETION, streams=True))
async def completions(request: Request, key: UserKey) -> Response:
    return await proxy(request, key, "/v1/completions")


@router.post("/embeddings", **operation(EMBEDDING, streams=False))
async def embeddings(request: Request, key: UserKey) -> Response:
    return await proxy(request, key, "/v1/embeddings")


async def read_body(request: Request) -> bytes:
    """The body of an ASGI request, refused (413) past the size limit."""
    limit: int = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body exceeds {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"request body exceeds {limit} bytes")
    return bytes(body)


async def proxy(request: Request, key: ApiKey, path: str) -> Response:
    """Authenticated ``request`` to ``path`` of a replica of its model, answered."""
    body = await read_body(request)
    return as_response(await answer(request.app.state, key, path, body, request.headers.get))


def as_response(found: Answer) -> Response:
    if found.stream is not None:
        return StreamingResponse(found.stream, found.status, found.headers,
                                 media_type=found.media_type)  # fmt: skip
    return Response(found.body, found.status, found.headers, media_type=found.media_type)


def error_answer(exc: ApiError) -> Answer:
    """``exc`` in OpenAI's error shape, with ``Retry-After`` where waiting helps."""
    body = json.dumps(error_body(exc.status, exc.message, exc.code, exc.param)).encode()
    headers = {"retry-after": str(exc.retry_after)} if exc.retry_after else {}
    return Answer(exc.status, "application/json", headers, body)


async def answer(
    state: Any, key: ApiKey, path: str, body: bytes, header: Callable[[str], str | None]
) -> Answer:
    """``body``, sent by ``key`` to ``path``, answered by a replica of its model
    (``state``: the app's; ``header``: the request's headers by lower-case name)."""
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise ApiError(400, "request body must be a JSON object")
    model = parsed.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "'model' is required and must be a string", param="model")
    if not isinstance(parsed.get("stream", False), bool):
        raise ApiError(400, "'stream' must be a boolean", param="stream")
    _check_limits(parsed, state.settings)
    if not key.may_use(model):
        raise ApiError(403, f"this key may not use model {model!r}", code="model_not_allowed")
    if not await _tenant_may_use(state, key, model):  # as if it did not exist
        raise ApiError(404, f"the model {model!r} does not exist", code="model_not_found")
    view: ReplicaView = state.replicas
    if not view.replicas(model) and not await view.regained(model, state.settings.gap_wait):
        try:
            wanted = await state.deployments.serves(model)
        except UNAVAILABLE:  # no replica, and nobody to ask whether one is coming
            wanted = True
        if wanted:
            raise ApiError(503, f"no replica of {model!r} is ready", retry_after=5)
        raise ApiError(404, f"the model {model!r} does not exist", code="model_not_found")
    settle = await _admit(state.limiter, key, parsed, len(body), state.settings)
    asking = with_usage_requested(parsed)
    metering = Metering(new_request_id(), key.id, model, state.usage_meter,
                        asked=usage_asked(parsed), settle=settle)  # fmt: skip
    settings: GatewaySettings = state.settings
    policy: Policy = state.policy
    affinity = affinity_key(policy.affinity, parsed, header(settings.session_header),
                            settings.prefix_chars)  # fmt: skip
    dispatch = Dispatch(state, model, path, affinity)
    sent = body if asking is None else json.dumps(asking).encode()
    chat = path.endswith("chat/completions")
    try:
        return await forward(dispatch, Forward(sent, asking or parsed, chat, metering))
    except ApiError:
        metering.refund()
        raise


async def _admit(
    limiter: RateLimiter, key: ApiKey, parsed: dict[str, Any], size: int, settings: GatewaySettings
) -> Callable[[int], None] | None:
    """Admit the request under its key's limits; with a token limit, how to settle the
    tokens reserved for it once it is done."""
    if key.rpm_limit is None and key.tpm_limit is None:
        return None
    reserve = reserved_tokens(parsed, size, settings.reserve_tokens) if key.tpm_limit else 0
    admission = await limiter.admit(key.id, key.rpm_limit, key.tpm_limit, reserve)
    if admission.wait:
        limits = [f"{key.rpm_limit} requests"] if key.rpm_limit else []
        limits += [f"{key.tpm_limit} tokens"] if key.tpm_limit else []
        message = f"this key's limit of {' and '.join(limits)} a minute is reached"
        raise ApiError(429, message, code="rate_limit_exceeded", retry_after=int(admission.wait))
    if not key.tpm_limit:
        return None
    return lambda used: limiter.settle(key.id, admission.window, used - reserve)


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
