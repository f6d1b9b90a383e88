"""The replica table and shard leases on a real Redis: atomic diffs through the index,
figures merged in place, and shards spread over the live health instances."""

from __future__ import annotations

from cic_common.leases import ShardLeases, shard_of
from cic_common.replicas import Replica, ReplicaTable
from redis.asyncio import Redis


def replica(node_id: str, model: str = "m1", **fields: object) -> Replica:
    return Replica.model_validate(
        {"node_id": node_id, "deployment_id": "d1", "model": model,
         "endpoint": f"http://{node_id}:8000", **fields}
    )  # fmt: skip


async def test_apply_lists_moves_and_unlists_nodes_in_one_new_version(redis: Redis) -> None:
    table = ReplicaTable(redis)
    first = await table.apply([replica("n1"), replica("n2"), replica("n3", "m2")], [])
    assert await table.listed() == {"n1": "m1", "n2": "m1", "n3": "m2"}
    assert await table.models() == ["m1", "m2"]

    second = await table.apply([replica("n2", "m2", draining=True)], ["n3", "nobody"])
    assert second == first + 1
    assert await table.listed() == {"n1": "m1", "n2": "m2"}
    assert [r.node_id for r in await table.replicas("m1")] == ["n1"]
    (moved,) = await table.replicas("m2")
    assert moved.draining

    await table.apply([], ["n1"])
    assert await table.models() == ["m2"]  # no replicas left: the model is gone


async def test_merge_updates_listed_entries_only_and_keeps_the_version(redis: Redis) -> None:
    table = ReplicaTable(redis)
    version = await table.apply([replica("n1", degraded=True)], [])
    written = await table.merge([
        ("n1", '{"requests_running": 4, "latency_p95": null, "kv_cache_usage": 0.25}'),
        ("n9", '{"requests_running": 7}'),
    ])  # fmt: skip
    assert written == 1
    (entry,) = await table.replicas("m1")
    assert (entry.requests_running, entry.kv_cache_usage, entry.latency_p95) == (4, 0.25, None)
    assert entry.degraded
    assert entry.endpoint == "http://n1:8000"
    assert await table.listed() == {"n1": "m1"}
    assert await table.version() == version


async def test_replace_makes_the_table_exactly_what_it_is_given(redis: Redis) -> None:
    table = ReplicaTable(redis)
    await table.apply([replica("n1"), replica("n2", "m2")], [])
    await table.replace({"m3": [replica("n3", "m3")]})
    assert await table.snapshot() == {"m3": [replica("n3", "m3")]}


async def test_shards_are_spread_fairly_and_handed_over(redis: Redis) -> None:
    a, b, c = (ShardLeases(redis, "test", 16, ttl_seconds=30) for _ in range(3))
    assert await a.claim() == frozenset(range(16))  # alone: everything
    assert await b.claim() == frozenset()  # all taken; a gives back its excess …
    held_a = await a.claim()
    assert len(held_a) == 8
    held_b = await b.claim()  # … and b takes it
    assert held_a | held_b == frozenset(range(16))
    assert not held_a & held_b

    await c.claim()
    shares = [await a.claim(), await b.claim(), await c.claim(), await a.claim()]
    assert all(len(s) <= 6 for s in shares)

    await c.release()  # leaving: the others take its shards at their next claims
    final = [await a.claim(), await b.claim()]
    assert final[0] | final[1] == frozenset(range(16))
    assert not final[0] & final[1]


def test_a_key_always_falls_in_the_same_shard() -> None:
    assert shard_of("n-abc", 16) == shard_of("n-abc", 16)
    assert {shard_of(f"n{i}", 16) for i in range(200)} == set(range(16))
