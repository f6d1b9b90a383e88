"""Leases in Redis: a token and an expiry, so a crashed holder is replaced in one TTL."""

from __future__ import annotations

import secrets

from redis.asyncio import Redis

__all__ = ["RedisLease"]

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
elseif redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class RedisLease:
    """Held by one instance at a time; renewed by each ``acquire`` of the holder."""

    def __init__(self, redis: Redis, name: str, ttl_seconds: float) -> None:
        self._redis = redis
        self._key = f"cic:lease:{name}"
        self._token = secrets.token_hex(8)
        self._ttl_ms = int(ttl_seconds * 1000)

    async def acquire(self) -> bool:
        result = await self._redis.eval(_RENEW, 1, self._key, self._token, self._ttl_ms)
        return bool(result)

    async def release(self) -> None:
        await self._redis.eval(_RELEASE, 1, self._key, self._token)
