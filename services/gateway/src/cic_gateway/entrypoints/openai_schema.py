"""The OpenAPI description of the OpenAI-compatible routes, whose handlers read the raw
body (to hand it on unparsed where they can): the essentials of each request (every
other field of OpenAI's and vLLM's goes to the engine as it came), and the answers,
whole or streamed."""

from __future__ import annotations

from typing import Any

from cic_gateway.domain.errors import ERROR_RESPONSES

__all__ = ["CHAT", "COMPLETION", "EMBEDDING", "operation"]

_BOUND = "the maximum is the default of the gateway's setting (CIC_MAX_TOKENS, CIC_MAX_N)"
_MESSAGE: dict[str, Any] = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"enum": ["system", "user", "assistant"]},
        "content": {"type": "string"},
    },
}
_COMMON: dict[str, Any] = {
    "model": {"type": "string", "minLength": 1},
    "max_tokens": {"type": "integer", "minimum": 1, "maximum": 32768, "description": _BOUND},
    "n": {"type": "integer", "minimum": 1, "maximum": 16, "description": _BOUND},
    "stream": {"type": "boolean"},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "user": {"type": "string", "description": "the session policy's key without a header"},
}
CHAT: dict[str, Any] = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        **_COMMON,
        "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
        "max_completion_tokens": {"type": "integer", "minimum": 1, "maximum": 32768},
    },
}
COMPLETION: dict[str, Any] = {
    "type": "object",
    "required": ["model", "prompt"],
    "properties": {
        **_COMMON,
        "prompt": {"type": "string"},
    },
}
EMBEDDING: dict[str, Any] = {
    "type": "object",
    "required": ["model", "input"],
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "input": {"anyOf": [{"type": "string"}, {"type": "array", "minItems": 1}]},
        "encoding_format": {"enum": ["float", "base64"]},
        "dimensions": {"type": "integer", "minimum": 1},
    },
}
_EVENT = {"type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}}
"""One server-sent event of a stream."""


def operation(body: dict[str, Any], streams: bool) -> dict[str, Any]:
    """``openapi_extra`` and ``responses`` for a route taking ``body``."""
    ok: dict[str, Any] = {"application/json": {"schema": {"type": "object"}}}
    if streams:
        ok["text/event-stream"] = {"schema": _EVENT}
    statuses = (400, 401, 403, 404, 413, 429, 503)
    return {
        "openapi_extra": {
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}}
        },
        "responses": {
            200: {"description": "the engine's answer, whole or streamed", "content": ok},
            **{status: ERROR_RESPONSES[status] for status in statuses},
            504: {**ERROR_RESPONSES[503], "description": "no replica answered in time"},
        },
    }
