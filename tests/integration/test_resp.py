"""The lean Redis client on a real Redis: replies in order under concurrency, errors as
redis-py's, scripts reloaded after a flush, and a new connection after a lost one."""

from __future__ import annotations

import asyncio

import pytest
import uvloop
from cic_common.resp import RespClient
from cic_common.scripts import Script, close_scripts
from conftest import Servers
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError


def lean(redis: Redis) -> RespClient:
    options = redis.connection_pool.connection_kwargs
    return RespClient(options["host"], options["port"], db=options.get("db", 0))


async def test_concurrent_calls_get_their_own_replies_in_the_selected_db(redis: Redis) -> None:
    client = lean(redis)
    try:
        await asyncio.gather(*(client.call("SET", f"resp:{i}", i) for i in range(200)))
        replies = await asyncio.gather(*(client.call("GET", f"resp:{i}") for i in range(200)))
        assert replies == [str(i).encode() for i in range(200)]
        assert await redis.get("resp:7") == b"7"  # the same db as redis-py's
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await client.call("LPUSH", "resp:1", "x")
        assert await client.call("INCR", "resp:counter") == 1  # still in step after an error
    finally:
        await client.close()


async def test_a_lost_connection_fails_its_calls_and_the_next_call_reconnects(
    redis: Redis,
) -> None:
    client = lean(redis)
    try:
        await client.call("SET", "resp:name", "before")
        ident = await client.call("CLIENT", "ID")
        waiting = asyncio.create_task(client.call("BLPOP", "resp:never", 30))
        await asyncio.sleep(0.1)  # the BLPOP is on the server, blocked
        assert await redis.client_kill_filter(_id=ident) == 1
        with pytest.raises(RedisConnectionError):
            await waiting
        assert await client.call("GET", "resp:name") == b"before"
        assert await client.call("CLIENT", "ID") != ident  # a new connection
    finally:
        await client.close()


async def test_a_script_is_loaded_again_after_the_server_forgets_it(redis: Redis) -> None:
    script = Script(redis, "return tonumber(ARGV[1]) + 1")
    assert await script(args=[41]) == 42
    await redis.script_flush()
    assert await script(args=[1]) == 2


def test_the_client_runs_on_uvloop_as_the_services_do(servers: Servers) -> None:
    async def calls() -> list[object]:
        redis = Redis.from_url(servers.redis_url)
        try:
            script = Script(redis, "return ARGV[1]")
            return list(await asyncio.gather(*(script(args=[i]) for i in range(50))))
        finally:
            await redis.aclose()

    assert uvloop.run(calls()) == [str(i).encode() for i in range(50)]


async def test_the_scripts_on_one_client_share_a_connection_that_closes_with_them(
    servers: Servers,
) -> None:
    redis = Redis.from_url(servers.redis_url)
    try:
        first, second = Script(redis, "return 1"), Script(redis, "return 2")
        assert (await first(), await second()) == (1, 2)
        named = await redis.client_list()
        before = len(named)
        await close_scripts(redis)
        after = await eventually_fewer(redis, before)
        assert after == before - 1  # one shared connection, and it is gone
        assert await first() == 1  # and a script called again simply reconnects
    finally:
        await close_scripts(redis)
        await redis.aclose()


async def eventually_fewer(redis: Redis, count: int) -> int:
    for _ in range(50):
        now = len(await redis.client_list())
        if now < count:
            return now
        await asyncio.sleep(0.02)
    return count
