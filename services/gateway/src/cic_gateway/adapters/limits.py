"""Per-key rate limits held in Redis, so every gateway instance draws on one allowance."""

from __future__ import annotations

import math

from redis.asyncio import Redis

__all__ = ["RateLimiter"]

# A sliding-window counter: this window's count plus the last window's, weighted by how
# much of it still overlaps the sliding window. Times are the Redis server's.
_ADMIT = """
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('time')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local current = math.floor(now / window)
local here = KEYS[1] .. ':' .. current
local count = tonumber(redis.call('get', here) or '0')
local previous = tonumber(redis.call('get', KEYS[1] .. ':' .. (current - 1)) or '0')
local into = (now % window) / window
if previous * (1 - into) + count + 1 <= limit then
  redis.call('incr', here)
  redis.call('pexpire', here, 2 * window)
  return 0
end
local wait = window - (now % window)
if previous > 0 and limit - 1 - count >= 0 then
  wait = math.max(1, ((1 - (limit - 1 - count) / previous) - into) * window)
end
return wait
"""


class RateLimiter:
    """Admits a key's request when it fits the key's requests-per-minute limit, in one
    round trip to Redis (one atomic script); all instances share the count, so three
    gateways together admit what one would."""

    def __init__(self, redis: Redis, window_seconds: float = 60.0) -> None:
        self._admit = redis.register_script(_ADMIT)
        self._window_ms = int(window_seconds * 1000)

    async def admit(self, key_id: str, per_window: int) -> float:
        """0 when admitted (and counted); else the seconds to wait before retrying."""
        wait_ms = float(
            await self._admit(keys=[f"cic:ratelimit:{key_id}"], args=[per_window, self._window_ms])
        )
        return 0.0 if wait_ms <= 0 else max(1.0, math.ceil(wait_ms / 1000))
