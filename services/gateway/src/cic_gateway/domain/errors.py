"""Errors in OpenAI's shape, so the official clients raise the right exception."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = ["ERROR_RESPONSES", "TYPES", "ApiError", "ErrorBody", "error_body"]

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    431: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "server_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class ErrorDetail(BaseModel):
    message: str = Field(description="what went wrong, for a person")
    type: str = Field(description="the kind of error, as OpenAI names it")
    param: str | None = Field(description="the request field at fault, if one is")
    code: str | None = Field(description="a stable code to branch on, if there is one")


class ErrorBody(BaseModel):
    """Every error the gateway answers: OpenAI's shape, so its clients raise the right
    exception (``{"error": {"message", "type", "param", "code"}}``)."""

    error: ErrorDetail


def _described(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    entry: dict[str, Any] = {"model": ErrorBody, "description": description}
    if retry_after:
        entry["headers"] = {
            "Retry-After": {
                "description": "seconds to wait before trying again",
                "required": True,
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    return entry


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _described("malformed or invalid request"),
    401: _described("no API key, or one that is not live"),
    403: _described("the key may not do this"),
    404: _described("no such resource or model"),
    409: _described("conflicts with what exists"),
    413: _described("request body too large"),
    429: _described("the key's rate limit is reached", retry_after=True),
    503: _described("nothing can serve it now", retry_after=True),
}
"""OpenAPI ``responses`` entries per status, for routes to pick from."""


class ApiError(Exception):
    """Raised by handlers; rendered as ``{"error": {...}}`` with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.retry_after = retry_after


def error_body(
    status: int, message: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": TYPES.get(status, "invalid_request_error"),
            "param": param,
            "code": code,
        }
    }
