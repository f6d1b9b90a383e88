"""The OpenAI routes' requests straight to their handler, around FastAPI's router.

On the request path FastAPI's layers — its telemetry and body-limit middlewares, the
exit-stack middleware, route matching over included routers, dependency solving — cost
more CPU than the proxying itself (a third of the gateway's time under load, measured
with py-spy by ``bench/gateway``). So ``POST`` to the three proxied routes goes to
``proxy`` directly, with the same authentication and the same errors; everything else
(the admin API, ``/v1/models``, the OpenAPI document, where the proxied routes stay
described) goes through FastAPI as before.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from cic_gateway.domain.errors import ApiError
from cic_gateway.entrypoints.auth import key_of
from cic_gateway.entrypoints.openai_api import PROXIED, as_response, error_answer, proxy

__all__ = ["GatewayApp", "error_response"]

log = logging.getLogger(__name__)


def error_response(exc: ApiError) -> Response:
    return as_response(error_answer(exc))


class GatewayApp(FastAPI):
    """FastAPI, but for the proxied routes, which it serves by hand."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in PROXIED:
            limit = self.max_body_size
            if scope["type"] == "http" and limit is not None and _declared_size(scope) > limit:
                # Refused before it is read, and in OpenAI's shape: FastAPI's own limit
                # (``max_body_size``, for a body of undeclared size) answers in plain text.
                refusal = error_response(ApiError(413, f"request body exceeds {limit} bytes"))
                await refusal(scope, receive, send)
                return
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        request = Request(scope, receive)
        response: Response
        try:
            key = await key_of(self.state.keys, request.headers.get("authorization"))
            response = await proxy(request, key, scope["path"])
        except ApiError as exc:
            response = error_response(exc)
        except Exception:
            log.exception("a request failed", extra={"path": scope["path"]})
            response = error_response(ApiError(500, "internal error"))
        await response(scope, receive, send)


def _declared_size(scope: Scope) -> int:
    """The request's ``Content-Length``; 0 without a valid one."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0
