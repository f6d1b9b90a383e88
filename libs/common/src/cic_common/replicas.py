"""The replica table in Redis: what the gateway routes on. Health is its only writer.

Layout: one hash per model (``cic:replicas:model:<model>``, node id -> ``Replica`` as
JSON) that gateways read; the set of models with replicas; an index (node id -> model)
that lets writers find and change one node's entry without knowing its model; and a
version, bumped and announced on ``CHANGED_CHANNEL`` whenever membership changes (not
when only load figures move), so readers can cache the table until the next version.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis

from cic_common.scripts import Script

__all__ = ["CHANGED_CHANNEL", "Replica", "ReplicaTable"]

CHANGED_CHANNEL = "cic:replicas:changed"
_PREFIX = "cic:replicas:model:"
_MODELS = "cic:replicas:models"
_INDEX = "cic:replicas:nodes"
_VERSION = "cic:replicas:version"

# Scripts name the model hashes they touch from the index, so the table lives on one
# Redis (not a cluster); each runs atomically.
_UNLIST = """
local function unlist(node)
  local model = redis.call('hget', KEYS[1], node)
  if model then
    local key = ARGV[1] .. model
    redis.call('hdel', key, node)
    if redis.call('hlen', key) == 0 then redis.call('srem', KEYS[2], model) end
    redis.call('hdel', KEYS[1], node)
  end
end
"""
_APPLY = (
    _UNLIST
    + """
local upserts = tonumber(ARGV[2])
local i = 3
for _ = 1, upserts do
  local node, model = ARGV[i], ARGV[i + 1]
  local was = redis.call('hget', KEYS[1], node)
  if was and was ~= model then unlist(node) end
  redis.call('hset', ARGV[1] .. model, node, ARGV[i + 2])
  redis.call('hset', KEYS[1], node, model)
  redis.call('sadd', KEYS[2], model)
  i = i + 3
end
while i <= #ARGV do
  unlist(ARGV[i])
  i = i + 1
end
return redis.call('incr', KEYS[3])
"""
)
_MERGE = """
local written = 0
for i = 2, #ARGV, 2 do
  local model = redis.call('hget', KEYS[1], ARGV[i])
  if model then
    local key = ARGV[1] .. model
    local entry = redis.call('hget', key, ARGV[i])
    if entry then
      local replica = cjson.decode(entry)
      for field, value in pairs(cjson.decode(ARGV[i + 1])) do replica[field] = value end
      redis.call('hset', key, ARGV[i], cjson.encode(replica))
      written = written + 1
    end
  end
end
return written
"""


class Replica(BaseModel):
    """One routable replica and the inputs of its routing weight."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    node_id: str
    deployment_id: str
    model: str
    endpoint: str
    draining: bool = False
    requests_running: float = 0.0
    requests_waiting: float = 0.0
    kv_cache_usage: float = 0.0
    requests_per_second: float = 0.0
    latency_p95: float | None = None
    """Seconds, end to end, over the engine's last heartbeat interval."""
    latency_ms: float | None = None
    """Average round trip of health's own polls of the engine."""
    degraded: bool = False
    """Serving, but its agent is silent: prefer the others."""


class ReplicaTable:
    """Reads and writes the table; every write is atomic."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._apply = Script(redis, _APPLY)
        self._merge = Script(redis, _MERGE)

    async def replace(self, table: dict[str, list[Replica]]) -> int:
        """Make the table exactly ``table`` (model -> replicas); returns the new version."""
        listed = await self.listed()
        keep = {r.node_id for replicas in table.values() for r in replicas}
        return await self.apply(
            [r for replicas in table.values() for r in replicas], set(listed) - keep
        )

    async def apply(self, upserts: Iterable[Replica], removals: Iterable[str]) -> int:
        """List (or rewrite) ``upserts`` and unlist the nodes ``removals``, in one
        step; returns the new version and announces it on ``CHANGED_CHANNEL``."""
        args: list[str | int] = []
        for replica in upserts:
            args += [replica.node_id, replica.model, replica.model_dump_json()]
        count = len(args) // 3
        args += list(removals)
        version = int(await self._apply(keys=[_INDEX, _MODELS, _VERSION],
                                        args=[_PREFIX, count, *args]))  # fmt: skip
        await self._redis.publish(CHANGED_CHANNEL, str(version))
        return version

    async def merge(self, updates: list[tuple[str, str]]) -> int:
        """Set fields of listed replicas' entries (their load figures moved); a node
        not listed stays out. No new version: membership did not change. ``updates``
        are ``(node id, JSON object of Replica fields)``; returns how many were listed."""
        return int(await self._merge(keys=[_INDEX], args=self._merge_args(updates)))

    @staticmethod
    def _merge_args(updates: list[tuple[str, str]]) -> list[str]:
        args = [_PREFIX]
        for node_id, fields in updates:
            args += [node_id, fields]
        return args

    async def listed(self) -> dict[str, str]:
        """Every listed node and the model it is listed under."""
        raw = await self._redis.hgetall(_INDEX)
        return {_text(k): _text(v) for k, v in raw.items()}

    async def replicas(self, model: str) -> list[Replica]:
        raw = await self._redis.hgetall(_PREFIX + model)
        return [Replica.model_validate_json(v) for v in raw.values()]

    async def entries(self, keys: list[tuple[str, str]]) -> list[Replica | None]:
        """The entries of ``(model, node id)`` pairs, in one round trip; None for a
        replica not listed."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for model, node_id in keys:
                pipe.hget(_PREFIX + model, node_id)
            found = await pipe.execute()
        return [None if raw is None else Replica.model_validate_json(raw) for raw in found]

    async def models(self) -> list[str]:
        members: set[bytes | str] = await self._redis.smembers(_MODELS)
        return sorted(_text(m) for m in members)

    async def snapshot(self) -> dict[str, list[Replica]]:
        return (await self.read())[1]

    async def read(self) -> tuple[int, dict[str, list[Replica]]]:
        """The whole table and its version, in two round trips (a change between
        them is announced, so a reader following announcements reads again)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(_VERSION)
            pipe.smembers(_MODELS)
            version, members = await pipe.execute()
        models = sorted(_text(m) for m in members)
        async with self._redis.pipeline(transaction=False) as pipe:
            for model in models:
                pipe.hgetall(_PREFIX + model)
            hashes = await pipe.execute()
        table = {
            model: [Replica.model_validate_json(v) for v in entries.values()]
            for model, entries in zip(models, hashes, strict=True)
        }
        return int(version or 0), table

    async def version(self) -> int:
        raw = await self._redis.get(_VERSION)
        return int(raw or 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
