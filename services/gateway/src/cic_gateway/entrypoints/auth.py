"""Authentication: the bearer key of a request, resolved to a live API key."""

from __future__ import annotations

from fastapi import Request

from cic_gateway.adapters.store import ApiKey
from cic_gateway.domain.errors import ApiError
from cic_gateway.domain.keys import parse_key

__all__ = ["require_admin", "require_key"]


async def require_key(request: Request) -> ApiKey:
    """Any live key; 401 otherwise."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'")
    parsed = parse_key(token.strip())
    key = await request.app.state.keys.authenticate(parsed) if parsed else None
    if key is None:
        raise ApiError(401, "invalid or revoked API key", code="invalid_api_key")
    return key  # type: ignore[no-any-return]


async def require_admin(request: Request) -> ApiKey:
    """A live key of admin scope; 401 without a key, 403 with a user key."""
    key = await require_key(request)
    if key.scope != "admin":
        raise ApiError(403, "this route needs an admin key", code="admin_only")
    return key
