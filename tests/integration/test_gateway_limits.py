"""Per-key limits on a real Redis, shared by three gateway instances: requests and tokens
a minute, admitted together within the limit, refused with how long to wait."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import openai
import pytest
from cic_common.replicas import Replica, ReplicaTable
from cic_gateway.adapters.limits import RateLimiter
from cic_gateway.bootstrap import create_app
from cic_gateway.domain.keys import generate_key
from cic_gateway.settings import GatewaySettings
from conftest import Servers
from redis.asyncio import Redis
from support import sim_engine

MODEL = "limited-model"


async def test_three_gateways_together_admit_a_keys_request_limit_and_no_more(
    redis: Redis,
) -> None:
    gateways = [RateLimiter(redis) for _ in range(3)]
    waits = [(await gateways[i % 3].admit("klimited", 30)).wait for i in range(90)]
    assert sum(1 for w in waits if w == 0) == 30
    assert all(w >= 1 for w in waits[30:])  # each refusal says how long to wait
    assert (await gateways[0].admit("kother", 30)).wait == 0  # limits are per key


async def test_three_gateways_together_admit_a_keys_tokens_within_five_percent(
    redis: Redis,
) -> None:
    """Each request reserves 60 tokens and uses 40: bursts are held to what the
    reservations allow, and settling lets the window fill up to the limit."""
    gateways = [RateLimiter(redis) for _ in range(3)]
    used = rounds = 0
    while rounds < 10:
        rounds += 1
        admitted = await asyncio.gather(*(
            gateways[i % 3].admit("ktokens", None, tpm=1000, reserve=60) for i in range(30)
        ))  # fmt: skip
        accepted = [a for a in admitted if a.wait == 0]
        assert len(accepted) * 60 + used <= 1000  # never past the limit, even in a burst
        for i, admission in enumerate(accepted):
            gateways[i % 3].settle("ktokens", admission.window, 40 - 60)
        for gateway in gateways:
            await gateway.drain()
        used += 40 * len(accepted)
        if not accepted:
            break
    assert rounds > 2  # the settled tokens made room again
    assert 950 <= used <= 1000
    refused = await gateways[0].admit("ktokens", None, tpm=1000, reserve=60)
    assert refused.wait >= 1


async def test_a_request_larger_than_the_whole_limit_still_runs_alone(redis: Redis) -> None:
    limiter = RateLimiter(redis)
    assert (await limiter.admit("kbig", None, tpm=100, reserve=500)).wait == 0
    assert (await limiter.admit("kbig", None, tpm=100, reserve=1)).wait >= 1
    assert (await limiter.admit("kbig", 5, tpm=None, reserve=500)).wait == 0  # rpm only


async def test_retry_after_covers_a_wait_past_the_end_of_this_window(redis: Redis) -> None:
    """900 of 1,000 tokens taken: a second 900 cannot fit before this window's count has
    slid out of the next one far enough (8/9 of a window in), not at this window's end."""
    window = 600.0
    limiter = RateLimiter(redis, window_seconds=window)
    assert (await limiter.admit("kwait", None, tpm=1000, reserve=900)).wait == 0
    seconds, micros = await redis.time()
    now_ms = seconds * 1000 + micros // 1000
    window_ms = int(window * 1000)
    left_ms = window_ms - now_ms % window_ms
    wait = (await limiter.admit("kwait", None, tpm=1000, reserve=900)).wait
    assert wait * 1000 >= left_ms + (1 - 100 / 900) * window_ms - 50
    assert wait <= 2 * window


@pytest.fixture(scope="module")
async def engine() -> AsyncIterator[str]:
    async with sim_engine(MODEL) as process:
        yield process.base_url


async def test_three_gateways_hold_a_keys_tokens_a_minute_through_the_api(
    servers: Servers, database: str, redis: Redis, engine: str
) -> None:
    admin_key, _ = generate_key()
    settings = GatewaySettings(nats_url=servers.nats_url, postgres_dsn=database,
                               redis_url=servers.redis_url, admin_key=admin_key,
                               key_cache_seconds=0)  # fmt: skip
    await ReplicaTable(redis).apply(
        [Replica(node_id="t1", deployment_id="dtpm", model=MODEL, endpoint=engine)], []
    )
    apps = [create_app(settings) for _ in range(3)]
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for app in apps:
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app)
            clients.append(await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://gw")
            ))  # fmt: skip
        admin = {"Authorization": f"Bearer {admin_key}"}
        created = await clients[0].post("/admin/keys", json={"name": "tokens", "tpm_limit": 2000},
                                        headers=admin)  # fmt: skip
        assert created.status_code == 201, created.text
        assert created.json()["tpm_limit"] == 2000
        sdks = [
            openai.AsyncOpenAI(base_url="http://gw/v1", api_key=created.json()["key"],
                               max_retries=0, http_client=c)  # type: ignore[arg-type]
            for c in clients
        ]  # fmt: skip
        used, refused = 0, None
        for turn in range(400):
            try:
                answer = await sdks[turn % 3].completions.create(model=MODEL, prompt="hi",
                                                                 max_tokens=10)  # fmt: skip
            except openai.RateLimitError as exc:
                refused = exc
                break
            assert answer.usage is not None
            used += answer.usage.total_tokens
            for app in apps:
                await app.state.limiter.drain()  # settled before the next request comes
        assert 0.95 * 2000 <= used <= 2000
        assert refused is not None
        assert int(refused.response.headers["retry-after"]) >= 1
        assert "2000 tokens a minute" in refused.message


async def test_three_gateways_admit_a_busy_key_from_leases_within_its_limit(
    redis: Redis,
) -> None:
    """A limit of 20,000 a minute, asked for 24,000 times over three instances: leases
    take up to 100 at once, so far fewer round trips than requests (until the limit is
    reached: each refusal is a round trip), yet together the instances admit between
    95% and 100% of the limit, and the shared count, once what the leases left is given
    back, is exactly what they admitted."""
    gateways = [RateLimiter(redis, window_seconds=600) for _ in range(3)]
    admitted = 0
    for burst in range(24):
        answers = await asyncio.gather(*(
            gateways[i % 3].admit("kleased", 20_000) for i in range(1000)
        ))  # fmt: skip
        admitted += sum(1 for a in answers if a.wait == 0)
        if burst == 14:
            assert admitted == 15_000
            assert sum(g.leases_taken for g in gateways) < 15_000 / 50
    assert 0.95 * 20_000 <= admitted <= 20_000
    for gateway in gateways:
        await gateway.drain()
    assert await counted(redis, "cic:ratelimit:kleased:*") == admitted
    assert (await gateways[0].admit("kleased", 20_000)).wait >= 1


async def test_an_expired_lease_gives_back_what_it_left_when_the_next_is_taken(
    redis: Redis,
) -> None:
    limiter = RateLimiter(redis, window_seconds=600, lease_seconds=0.05)
    for _ in range(40):  # leases of 1, 2, 4, 8, 16, then 32 of which 9 are used
        assert (await limiter.admit("kexpiring", 100_000, tpm=1_000_000, reserve=10)).wait == 0
    leases = limiter.leases_taken
    assert leases < 10
    await asyncio.sleep(0.1)
    assert (await limiter.admit("kexpiring", 100_000, tpm=1_000_000, reserve=10)).wait == 0
    assert limiter.leases_taken == leases + 1
    new_lease = limiter._leases["kexpiring"]  # what the lease in hand holds is counted too
    assert await counted(redis, "cic:ratelimit:kexpiring:*") == 41 + new_lease.requests
    assert await counted(redis, "cic:tokenlimit:kexpiring:*") == 410 + new_lease.tokens


async def counted(redis: Redis, pattern: str) -> int:
    """The sum of the shared counts whose keys match ``pattern``."""
    return sum([int(await redis.get(key) or 0) async for key in redis.scan_iter(pattern)])


async def test_a_key_past_its_limit_is_refused_without_a_round_trip_each_time(
    redis: Redis,
) -> None:
    limiter = RateLimiter(redis, refusal_seconds=30)
    assert (await limiter.admit("khammer", 3)).wait == 0
    assert (await limiter.admit("khammer", 3)).wait == 0
    assert (await limiter.admit("khammer", 3)).wait == 0
    first = await limiter.admit("khammer", 3)
    trips = limiter.leases_taken
    again = [await limiter.admit("khammer", 3) for _ in range(50)]
    assert first.wait >= 1
    assert all(a.wait == first.wait for a in again)
    assert limiter.leases_taken == trips  # refused from memory
    assert (await limiter.admit("khammer", 6)).wait == 0  # a raised limit asks again
    assert limiter.leases_taken == trips + 1


async def test_a_request_that_leaves_while_waiting_for_a_lease_disturbs_no_other(
    redis: Redis,
) -> None:
    limiter = RateLimiter(redis)
    assert (await limiter.admit("kcancel", 10_000)).wait == 0  # a first lease, of one
    first, leaving, last = (asyncio.create_task(limiter.admit("kcancel", 10_000)) for _ in "abc")
    await asyncio.sleep(0)  # the first is taking the next lease; the other two wait for it
    leaving.cancel()  # its client left
    assert (await first).wait == 0
    assert (await last).wait == 0
    with pytest.raises(asyncio.CancelledError):
        await leaving
