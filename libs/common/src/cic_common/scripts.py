"""Redis Lua scripts called by their SHA-1, loaded on first use and again after a
``SCRIPT FLUSH`` or a restart: one round trip per call.

Over plain TCP (the usual ``redis://`` URL) the calls go through a :class:`RespClient`
of their own, around redis-py's per-command wrappers, which were most of a call's cost
on the gateway's request path; over TLS or a Unix socket, through redis-py.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import NoScriptError

from cic_common.resp import RespClient

__all__ = ["Script", "close_scripts"]

_LEAN: weakref.WeakKeyDictionary[Redis, RespClient | None] = weakref.WeakKeyDictionary()
"""The lean client of each redis-py client, shared by the scripts made on it."""


def _lean_client(redis: Redis) -> RespClient | None:
    """A lean client to the same server as ``redis``, when it is reached over plain TCP
    (one per ``redis``, whatever the number of scripts)."""
    if redis in _LEAN:
        return _LEAN[redis]
    pool = redis.connection_pool
    lean = None
    if pool.connection_class is Connection:
        options = pool.connection_kwargs
        lean = RespClient(options.get("host", "localhost"), int(options.get("port", 6379)),
                          db=int(options.get("db", 0)), username=options.get("username"),
                          password=options.get("password"))  # fmt: skip
    _LEAN[redis] = lean
    return lean


async def close_scripts(redis: Redis) -> None:
    """Close the connection the scripts on ``redis`` share (before closing ``redis``)."""
    lean = _LEAN.get(redis)
    if lean is not None:
        await lean.close()


class Script:
    """One Lua script on one Redis server."""

    def __init__(self, redis: Redis, source: str) -> None:
        self._redis = redis
        self._lean = _lean_client(redis)
        self._source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(
        self, keys: Sequence[str | bytes] = (), args: Sequence[str | bytes | int | float] = ()
    ) -> Any:
        call = ("EVALSHA", self.sha, len(keys), *keys, *args)
        try:
            return await self._execute(call)
        except NoScriptError:
            await self._redis.script_load(self._source)
            return await self._execute(call)

    async def _execute(self, call: tuple[Any, ...]) -> Any:
        if self._lean is not None:
            return await self._lean.call(*call)
        return await self._redis.execute_command(*call)  # type: ignore[no-untyped-call]
