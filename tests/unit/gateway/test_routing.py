"""Replica choice under each policy: pure functions of the table and the load."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from cic_common.replicas import Replica
from cic_gateway.domain.routing import (
    POLICIES,
    LeastLoad,
    affinity_key,
    choose_replica,
    policy_named,
)


def replica(node_id: str, running: float = 0, draining: bool = False) -> Replica:
    return Replica(node_id=node_id, deployment_id="d", model="m", endpoint=f"http://{node_id}",
                   requests_running=running, draining=draining)  # fmt: skip


@pytest.mark.parametrize("name", POLICIES)
def test_draining_and_tried_replicas_are_never_chosen(name: str) -> None:
    policy = policy_named(name, random.Random(1))
    table = [replica("a", draining=True), replica("b"), replica("c")]
    for turn in range(50):
        chosen = choose_replica(table, {"c"}, policy, {}, key=f"k{turn}")
        assert chosen is not None
        assert chosen.node_id == "b"
    assert choose_replica(table, {"b", "c"}, policy, {}, key="k") is None


@pytest.mark.parametrize("name", POLICIES)
def test_degraded_replicas_serve_only_when_nothing_else_can(name: str) -> None:
    policy = policy_named(name, random.Random(3))
    degraded = Replica(node_id="d", deployment_id="d", model="m", endpoint="http://d",
                       degraded=True)  # fmt: skip
    table = [degraded, replica("ok")]
    assert {choose_replica(table, (), policy, {}, f"k{i}").node_id for i in range(20)} == {"ok"}  # type: ignore[union-attr]
    assert choose_replica(table, {"ok"}, policy, {}, "k") == degraded


def test_the_less_loaded_of_two_replicas_wins_counting_this_gateways_own_requests() -> None:
    policy = LeastLoad(random.Random(7))
    table = [replica("busy", running=50), replica("idle", running=0)]
    assert {choose_replica(table, (), policy, {}).node_id for _ in range(20)} == {"idle"}  # type: ignore[union-attr]
    table = [replica("a"), replica("b")]
    assert {choose_replica(table, (), policy, {"a": 4}).node_id for _ in range(20)} == {"b"}  # type: ignore[union-attr]


def test_round_robin_takes_each_replica_in_turn() -> None:
    policy = policy_named("round_robin")
    table = [replica("c"), replica("a", running=99), replica("b")]
    picks = [choose_replica(table, (), policy, {}).node_id for _ in range(6)]  # type: ignore[union-attr]
    assert picks == ["a", "b", "c", "a", "b", "c"]  # in turn, whatever the load


@pytest.mark.parametrize("name", ["session", "prefix"])
def test_an_affinity_key_keeps_its_replica_and_only_a_leavers_keys_move(name: str) -> None:
    policy = policy_named(name)
    table = [replica(n) for n in "abcd"]
    keys = [f"key-{i}" for i in range(400)]
    before = {k: choose_replica(table, (), policy, {}, k).node_id for k in keys}  # type: ignore[union-attr]
    assert before == {k: choose_replica(table, (), policy, {}, k).node_id for k in keys}  # type: ignore[union-attr]
    assert all(60 < count < 140 for count in Counter(before.values()).values())  # spread
    after = {k: choose_replica(table[1:], (), policy, {}, k).node_id for k in keys}  # type: ignore[union-attr]
    moved = {k for k in keys if before[k] != after[k]}
    assert moved == {k for k in keys if before[k] == "a"}
    # failover: a key's replica excluded, it goes to its next best, the same each time
    retried = {k: choose_replica(table, {before[k]}, policy, {}, k).node_id for k in keys}  # type: ignore[union-attr]
    assert all(retried[k] == after[k] for k in keys if before[k] == "a")


def test_a_prefix_gives_way_when_its_replica_is_far_busier_than_the_rest() -> None:
    policy = policy_named("prefix")
    table = [replica("a"), replica("b")]
    home = choose_replica(table, (), policy, {}, "system prompt").node_id  # type: ignore[union-attr]
    assert choose_replica(table, (), policy, {home: 8}, "system prompt").node_id == home  # type: ignore[union-attr]
    spilled = choose_replica(table, (), policy, {home: 9}, "system prompt")
    assert spilled is not None
    assert spilled.node_id != home


def test_the_affinity_key_is_the_session_or_the_prompts_beginning() -> None:
    body = {"user": "u-7", "messages": [{"role": "system", "content": "S" * 50},
                                         {"role": "user", "content": "hi"}]}  # fmt: skip
    assert affinity_key("session", body, "s-1", 10) == "s-1"
    assert affinity_key("session", body, None, 10) == "u-7"
    assert affinity_key("session", {"user": ""}, None, 10) is None
    assert affinity_key("prefix", body, None, 12) == "system:" + "S" * 5
    assert affinity_key("prefix", {"prompt": "abcdef"}, None, 4) == "abcd"
    assert affinity_key("prefix", {"prompt": ""}, None, 4) is None
    assert affinity_key(None, body, "s-1", 10) is None
    with pytest.raises(ValueError, match="unknown routing policy"):
        policy_named("fastest")
