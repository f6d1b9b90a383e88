"""Authentication: the bearer key of a request, resolved to a live API key."""

from __future__ import annotations

from typing import Annotated

from cic_common.db import UNAVAILABLE
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cic_gateway.adapters.keys import ApiKey, KeyStore
from cic_gateway.domain.errors import ApiError
from cic_gateway.domain.keys import parse_key

__all__ = ["key_of", "require_admin", "require_key"]

_bearer = HTTPBearer(
    auto_error=False, description="an API key: `Authorization: Bearer cic-<prefix>-<secret>`"
)
"""Declares the scheme in the OpenAPI document; the checks are ours (errors in OpenAI's
shape), so it never refuses a request itself."""


async def require_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    """Any live key; 401 otherwise."""
    bearer = f"Bearer {credentials.credentials}" if credentials else None
    return await key_of(request.app.state.keys, bearer)


async def key_of(keys: KeyStore, authorization: str | None) -> ApiKey:
    """The live key of an ``Authorization`` header; 401 otherwise."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'")
    parsed = parse_key(token.strip())
    try:
        key = await keys.authenticate(parsed) if parsed else None
    except UNAVAILABLE as exc:  # a key not seen lately, while PostgreSQL is away
        raise ApiError(503, "keys cannot be checked right now; retry shortly",
                       code="store_unavailable", retry_after=1) from exc  # fmt: skip
    if key is None:
        raise ApiError(401, "invalid or revoked API key", code="invalid_api_key")
    return key


async def require_admin(key: Annotated[ApiKey, Depends(require_key)]) -> ApiKey:
    """A live key of admin scope; 401 without a key, 403 with a user key."""
    if key.scope != "admin":
        raise ApiError(403, "this route needs an admin key", code="admin_only")
    return key
