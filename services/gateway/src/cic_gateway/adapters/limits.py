"""Per-key rate limits held in Redis, so every gateway instance draws on one allowance:
requests a minute and tokens a minute, both checked in one round trip per request."""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass

from cic_common.scripts import Script
from redis.asyncio import Redis

__all__ = ["Admission", "RateLimiter"]

log = logging.getLogger(__name__)

# Sliding-window counters: this window's count plus the last window's, weighted by how
# much of it still overlaps the sliding window. Times are the Redis server's. A request
# is admitted only if it fits both limits, and then counted in both: one request, and
# the tokens reserved for it (settled against what it really used once it is done).
_ADMIT = """
local rpm, tpm, reserve, window = tonumber(ARGV[1]), tonumber(ARGV[2]),
  tonumber(ARGV[3]), tonumber(ARGV[4])
local clock = redis.call('time')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local current = math.floor(now / window)
local into = (now % window) / window
local wait = 0
local function check(base, limit, need)
  local count = tonumber(redis.call('get', base .. ':' .. current) or '0')
  local previous = tonumber(redis.call('get', base .. ':' .. (current - 1)) or '0')
  if previous * (1 - into) + count + need <= limit then return end
  local left = window - (now % window)
  if limit - need - count >= 0 then  -- it fits in this window, once enough of the last slid out
    if previous > 0 then
      left = math.max(1, ((1 - (limit - need - count) / previous) - into) * window)
    end
  elseif count > 0 then  -- not before this window's count has slid out enough of the next
    left = left + math.max(0, 1 - (limit - need) / count) * window
  end
  wait = math.max(wait, left)
end
if rpm > 0 then check(KEYS[1], rpm, 1) end
if tpm > 0 then check(KEYS[2], tpm, math.min(reserve, tpm)) end
if wait > 0 then return {wait, current} end
if rpm > 0 then
  redis.call('incr', KEYS[1] .. ':' .. current)
  redis.call('pexpire', KEYS[1] .. ':' .. current, 2 * window)
end
if tpm > 0 then
  redis.call('incrby', KEYS[2] .. ':' .. current, reserve)
  redis.call('pexpire', KEYS[2] .. ':' .. current, 2 * window)
end
return {0, current}
"""

# A request's tokens, settled: what it used instead of what was reserved for it, in the
# window it was counted in (unless that window is gone).
_SETTLE = """
if redis.call('exists', KEYS[1]) == 1 then
  return redis.call('incrby', KEYS[1], ARGV[1])
end
return 0
"""


@dataclass(frozen=True)
class Admission:
    wait: float
    """0 when admitted (and counted); else the seconds to wait before retrying."""
    window: int
    """The window the request was counted in."""


class RateLimiter:
    """Admits a key's request when it fits the key's limits, in one round trip to Redis
    (one atomic script); all instances share the counts, so three gateways together
    admit what one would. The settling of tokens goes in the background, off the
    request's path."""

    def __init__(self, redis: Redis, window_seconds: float = 60.0) -> None:
        self._admit = Script(redis, _ADMIT)
        self._settle = Script(redis, _SETTLE)
        self._window_ms = int(window_seconds * 1000)
        self._settling: set[asyncio.Task[None]] = set()

    async def admit(
        self, key_id: str, rpm: int | None, tpm: int | None = None, reserve: int = 0
    ) -> Admission:
        """Admit one request of ``key_id`` under ``rpm`` requests and ``tpm`` tokens a
        minute (None: no limit), reserving ``reserve`` tokens for it."""
        wait_ms, window = await self._admit(
            keys=[f"cic:ratelimit:{key_id}", f"cic:tokenlimit:{key_id}"],
            args=[rpm or 0, tpm or 0, reserve, self._window_ms],
        )
        wait = 0.0 if float(wait_ms) <= 0 else max(1.0, math.ceil(float(wait_ms) / 1000))
        return Admission(wait, int(window))

    def settle(self, key_id: str, window: int, delta: int) -> None:
        """Correct a request's reserved tokens by ``delta`` (used minus reserved)."""
        if delta:
            task = asyncio.create_task(self._correct(f"cic:tokenlimit:{key_id}:{window}", delta))
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)

    async def _correct(self, key: str, delta: int) -> None:
        try:
            await self._settle(keys=[key], args=[delta])
        except Exception:
            log.warning("a token count could not be settled", exc_info=True)

    async def drain(self) -> None:
        """Wait for the settlements under way (at shutdown)."""
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)
