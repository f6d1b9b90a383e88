"""Per-key rate limits held in Redis, so every gateway instance draws on one allowance:
requests a minute and tokens a minute, both checked in one round trip per lease of them
(one per request at most; far fewer for a busy key)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass

from cic_common.scripts import Script
from redis.asyncio import Redis

from cic_gateway.domain.leases import Lease, Refusal, leasable, next_sizes

__all__ = ["Admission", "RateLimiter"]

log = logging.getLogger(__name__)

# Sliding-window counters: this window's count plus the last window's, weighted by how
# much of it still overlaps the sliding window. Times are the Redis server's. A request
# is admitted only if it fits both limits; then a lease is counted in both: as many
# requests and tokens as were asked for (ARGV[5], ARGV[6]) and fit, but never less than
# the request at hand (one request, and the tokens reserved for it, later settled
# against what it really used). What the instance's last lease of this key left unused
# (ARGV[8], ARGV[9], counted in window ARGV[7]) is given back first.
_ADMIT = """
local rpm, tpm, reserve, window = tonumber(ARGV[1]), tonumber(ARGV[2]),
  tonumber(ARGV[3]), tonumber(ARGV[4])
local ask_requests, ask_tokens = tonumber(ARGV[5]), tonumber(ARGV[6])
local function give_back(base, amount)
  local key = base .. ':' .. ARGV[7]
  if amount > 0 and redis.call('exists', key) == 1 then redis.call('decrby', key, amount) end
end
give_back(KEYS[1], tonumber(ARGV[8]))
give_back(KEYS[2], tonumber(ARGV[9]))
local clock = redis.call('time')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local current = math.floor(now / window)
local into = (now % window) / window
local wait = 0
local function check(base, limit, need)  -- the room left, and how long to wait if none
  local count = tonumber(redis.call('get', base .. ':' .. current) or '0')
  local previous = tonumber(redis.call('get', base .. ':' .. (current - 1)) or '0')
  local room = limit - previous * (1 - into) - count
  if need <= room then return room end
  local left = window - (now % window)
  if limit - need - count >= 0 then  -- it fits in this window, once enough of the last slid out
    if previous > 0 then
      left = math.max(1, ((1 - (limit - need - count) / previous) - into) * window)
    end
  elseif count > 0 then  -- not before this window's count has slid out enough of the next
    left = left + math.max(0, 1 - (limit - need) / count) * window
  end
  wait = math.max(wait, left)
  return 0
end
local room_requests, room_tokens = 0, 0
if rpm > 0 then room_requests = check(KEYS[1], rpm, 1) end
if tpm > 0 then room_tokens = check(KEYS[2], tpm, math.min(reserve, tpm)) end
if wait > 0 then return {wait, current, 0, 0, 0} end
local requests, tokens = 0, 0
local function add(base, amount)
  redis.call('incrby', base .. ':' .. current, amount)
  redis.call('pexpire', base .. ':' .. current, 2 * window)
end
if rpm > 0 then
  requests = math.max(1, math.min(ask_requests, math.floor(room_requests)))
  add(KEYS[1], requests)
end
if tpm > 0 then
  tokens = math.max(reserve, math.min(ask_tokens, math.floor(room_tokens)))
  add(KEYS[2], tokens)
end
return {0, current, requests, tokens, window - (now % window)}
"""

# Counts corrected after the fact (ARGV[i] added to KEYS[i]), in the window they were
# counted in unless that window is gone: a request's tokens settled against what it
# used, or what a lease left unused given back.
_CORRECT = """
for i, key in ipairs(KEYS) do
  local delta = tonumber(ARGV[i])
  if delta ~= 0 and redis.call('exists', key) == 1 then redis.call('incrby', key, delta) end
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
    """Admits a key's request when it fits the key's limits. All instances draw on one
    count in Redis, so three gateways together admit what one would; a busy key's
    requests are admitted from a lease of that count (see ``domain.leases``), so most
    make no round trip at all and the others one (one atomic script). Corrections go
    in the background, off the request's path."""

    def __init__(
        self,
        redis: Redis,
        window_seconds: float = 60.0,
        lease_seconds: float = 1.0,
        refusal_seconds: float = 0.1,
    ) -> None:
        self._admit = Script(redis, _ADMIT)
        self._correct = Script(redis, _CORRECT)
        self._window_ms = int(window_seconds * 1000)
        self._lease_seconds = lease_seconds
        self._refusal_seconds = refusal_seconds
        self._leases: dict[str, Lease] = {}
        self._refused: dict[str, Refusal] = {}
        self._taking: dict[str, asyncio.Future[None]] = {}
        self._correcting: set[asyncio.Task[None]] = set()
        self.leases_taken = 0
        """Round trips made to admit requests (one per lease)."""

    async def admit(
        self, key_id: str, rpm: int | None, tpm: int | None = None, reserve: int = 0
    ) -> Admission:
        """Admit one request of ``key_id`` under ``rpm`` requests and ``tpm`` tokens a
        minute (None: no limit), reserving ``reserve`` tokens for it."""
        while True:
            now = time.monotonic()
            lease = self._leases.get(key_id)
            if lease is not None and lease.take(rpm, tpm, reserve, now):
                return Admission(0.0, lease.window)
            refused = self._refused.get(key_id)
            if refused is not None and refused.holds(rpm, tpm, reserve, now):
                return Admission(refused.wait, 0)
            taking = self._taking.get(key_id)
            if taking is None:
                break
            # One lease taken at a time per key, then what it left is tried. Shielded: a
            # waiter cancelled (its client left) must not cancel the others' wait.
            await asyncio.shield(taking)
        asked = next_sizes(self._leases.get(key_id), rpm, tpm, reserve)
        if not leasable(rpm, tpm, reserve):
            # Limits too small to lease more than this request: no reason to queue the
            # key's other requests behind its round trip.
            return await self._take_lease(key_id, rpm, tpm, reserve, asked)
        done = self._taking[key_id] = asyncio.get_running_loop().create_future()
        try:
            return await self._take_lease(key_id, rpm, tpm, reserve, asked)
        finally:
            del self._taking[key_id]
            done.set_result(None)

    async def _take_lease(
        self, key_id: str, rpm: int | None, tpm: int | None, reserve: int, asked: tuple[int, int]
    ) -> Admission:
        # Taken out first: should the round trip fail midway, what the old lease left is
        # not given back twice (counted too much errs towards admitting less, never more).
        old = self._leases.pop(key_id, None)
        given_back = (old.window, old.requests, old.tokens) if old is not None else (0, 0, 0)
        self.leases_taken += 1
        wait_ms, window, requests, tokens, left_ms = await self._admit(
            keys=[f"cic:ratelimit:{key_id}", f"cic:tokenlimit:{key_id}"],
            args=[rpm or 0, tpm or 0, reserve, self._window_ms, *asked, *given_back],
        )
        if float(wait_ms) > 0:
            wait = max(1.0, math.ceil(float(wait_ms) / 1000))
            until = time.monotonic() + self._refusal_seconds
            self._refused[key_id] = Refusal(rpm, tpm, reserve, until, wait)
            return Admission(wait, int(window))
        self._refused.pop(key_id, None)
        expires = time.monotonic() + min(self._lease_seconds, float(left_ms) / 1000)
        lease = Lease(rpm, tpm, int(window), expires, int(requests), int(tokens))
        lease.take(rpm, tpm, reserve, float("-inf"))  # the request at hand: always fits
        self._leases[key_id] = lease
        return Admission(0.0, lease.window)

    def settle(self, key_id: str, window: int, delta: int) -> None:
        """Correct a request's reserved tokens by ``delta`` (used minus reserved)."""
        if delta:
            self._in_background([f"cic:tokenlimit:{key_id}:{window}"], [delta])
        if delta < 0:
            self._refused.pop(key_id, None)  # room was made: ask the shared count again

    def _in_background(self, keys: list[str], deltas: list[int]) -> None:
        task = asyncio.create_task(self._corrected(keys, deltas))
        self._correcting.add(task)
        task.add_done_callback(self._correcting.discard)

    async def _corrected(self, keys: list[str], deltas: list[int]) -> None:
        try:
            await self._correct(keys=keys, args=deltas)
        except Exception:
            log.warning("a rate-limit count could not be corrected", exc_info=True)

    async def drain(self) -> None:
        """Give back what the leases left, forget the refusals, and wait for the
        corrections under way (at shutdown; and where a test needs the counts exact)."""
        leases, self._leases = self._leases, {}
        self._refused.clear()
        for key_id, lease in leases.items():
            keys = [
                f"cic:ratelimit:{key_id}:{lease.window}",
                f"cic:tokenlimit:{key_id}:{lease.window}",
            ]
            self._in_background(keys, [-lease.requests, -lease.tokens])
        if self._correcting:
            await asyncio.gather(*self._correcting, return_exceptions=True)
