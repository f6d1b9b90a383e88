"""Leases in Redis: a token and an expiry, so a crashed holder is replaced in one TTL.

``RedisLease`` gives one piece of work to one instance at a time; ``ShardLeases``
spreads numbered shards of a piece of work evenly over the live instances.
"""

from __future__ import annotations

import secrets
import zlib

from redis.asyncio import Redis

from cic_common.scripts import Script

__all__ = ["RedisLease", "ShardLeases", "shard_of"]

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


_CLAIM = """
local token, ttl, shards, prefix = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local clock = redis.call('time')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('zadd', KEYS[1], now + ttl, token)
redis.call('zremrangebyscore', KEYS[1], '-inf', now)
local fair = math.ceil(shards / redis.call('zcard', KEYS[1]))
local held = {}
for shard = 0, shards - 1 do
  if redis.call('get', prefix .. shard) == token then table.insert(held, shard) end
end
while #held > fair do redis.call('del', prefix .. table.remove(held)) end
for _, shard in ipairs(held) do redis.call('pexpire', prefix .. shard, ttl) end
for shard = 0, shards - 1 do
  if #held >= fair then break end
  if redis.call('set', prefix .. shard, token, 'NX', 'PX', ttl) then
    table.insert(held, shard)
  end
end
return held
"""
_LEAVE = """
redis.call('zrem', KEYS[1], ARGV[1])
for shard = 0, tonumber(ARGV[2]) - 1 do
  if redis.call('get', ARGV[3] .. shard) == ARGV[1] then redis.call('del', ARGV[3] .. shard) end
end
return 0
"""


def shard_of(key: str, shards: int) -> int:
    """The shard ``key`` belongs to: the same in every instance and every release."""
    return zlib.crc32(key.encode()) % shards


class ShardLeases:
    """Shards ``0 .. shards-1`` of ``name``, spread over the instances claiming them.

    Each ``claim`` renews this instance's membership and its shards, gives back those
    above its fair share (shards over live instances, rounded up) and takes free ones
    up to it. An instance that stops claiming loses its shards after ``ttl_seconds``;
    with several instances the shares settle within one claim of each. Times are the
    Redis server's, so instances' clocks do not matter.
    """

    def __init__(self, redis: Redis, name: str, shards: int, ttl_seconds: float) -> None:
        if shards < 1:
            raise ValueError("shards must be at least 1")
        self.shards = shards
        self._members = f"cic:shards:{name}:members"
        self._prefix = f"cic:shards:{name}:"
        self._token = secrets.token_hex(8)
        self._ttl_ms = int(ttl_seconds * 1000)
        self._claim = Script(redis, _CLAIM)
        self._leave = Script(redis, _LEAVE)

    async def claim(self) -> frozenset[int]:
        """The shards this instance holds until the next claim (or the TTL)."""
        held = await self._claim(
            keys=[self._members], args=[self._token, self._ttl_ms, self.shards, self._prefix]
        )
        return frozenset(int(shard) for shard in held)

    async def release(self) -> None:
        """Leave: the others take this instance's shards at their next claim."""
        await self._leave(keys=[self._members], args=[self._token, self.shards, self._prefix])
