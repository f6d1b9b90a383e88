"""The replica table in Redis: what the gateway routes on. Health is its only writer."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

__all__ = ["CHANGED_CHANNEL", "Replica", "ReplicaTable"]

CHANGED_CHANNEL = "cic:replicas:changed"
_MODELS = "cic:replicas:models"
_VERSION = "cic:replicas:version"


_REFRESH = """
if redis.call('hexists', KEYS[1], ARGV[1]) == 1 then
  redis.call('hset', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
"""


def _model_key(model: str) -> str:
    return f"cic:replicas:model:{model}"


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
    """Reads and replaces the table. ``replace`` is atomic (one MULTI/EXEC)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def replace(self, table: dict[str, list[Replica]]) -> int:
        """Make the table exactly ``table`` (model -> replicas); returns the new version
        and announces it on ``CHANGED_CHANNEL``."""
        old_models = {m.decode() if isinstance(m, bytes) else m for m in await self._models()}
        async with self._redis.pipeline(transaction=True) as pipe:
            for model in old_models - set(table):
                pipe.delete(_model_key(model))
                pipe.srem(_MODELS, model)
            for model, replicas in table.items():
                pipe.delete(_model_key(model))
                if replicas:
                    pipe.hset(
                        _model_key(model),
                        mapping={r.node_id: r.model_dump_json() for r in replicas},
                    )
                    pipe.sadd(_MODELS, model)
                else:
                    pipe.srem(_MODELS, model)
            pipe.incr(_VERSION)
            results = await pipe.execute()
        version = int(results[-1])
        await self._redis.publish(CHANGED_CHANNEL, str(version))
        return version

    async def refresh(self, *replicas: Replica) -> list[bool]:
        """Rewrite listed replicas' entries (their load figures moved); a replica no
        longer listed stays out. No new version: membership did not change."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for replica in replicas:
                self.queue_refresh(pipe, replica)
            written = await pipe.execute()
        return [bool(w) for w in written]

    @staticmethod
    def queue_refresh(pipe: Pipeline, replica: Replica) -> None:
        """``refresh`` as one command of ``pipe`` (its result: 1 if written, else 0)."""
        pipe.eval(_REFRESH, 1, _model_key(replica.model), replica.node_id,
                  replica.model_dump_json())  # fmt: skip

    async def replicas(self, model: str) -> list[Replica]:
        raw = await self._redis.hgetall(_model_key(model))
        return [Replica.model_validate_json(v) for v in raw.values()]

    async def entries(self, keys: list[tuple[str, str]]) -> list[Replica | None]:
        """The entries of ``(model, node id)`` pairs, in one round trip; None for a
        replica not listed."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for model, node_id in keys:
                pipe.hget(_model_key(model), node_id)
            found = await pipe.execute()
        return [None if raw is None else Replica.model_validate_json(raw) for raw in found]

    async def models(self) -> list[str]:
        return sorted(m.decode() if isinstance(m, bytes) else m for m in await self._models())

    async def snapshot(self) -> dict[str, list[Replica]]:
        return {m: await self.replicas(m) for m in await self.models()}

    async def version(self) -> int:
        raw = await self._redis.get(_VERSION)
        return int(raw or 0)

    async def _models(self) -> set[bytes | str]:
        members: set[bytes | str] = await self._redis.smembers(_MODELS)
        return members
