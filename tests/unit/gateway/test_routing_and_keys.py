"""Replica choice and API key handling: pure functions."""

from __future__ import annotations

import random

from cic_common.replicas import Replica
from cic_gateway.domain.keys import generate_key, hash_secret, parse_key, secret_matches
from cic_gateway.domain.routing import choose_replica


def replica(node_id: str, running: float = 0, draining: bool = False) -> Replica:
    return Replica(
        node_id=node_id,
        deployment_id="d",
        model="m",
        endpoint=f"http://{node_id}",
        requests_running=running,
        draining=draining,
    )


def test_draining_and_tried_replicas_are_never_chosen() -> None:
    rng = random.Random(1)
    table = [replica("a", draining=True), replica("b"), replica("c")]
    for _ in range(50):
        chosen = choose_replica(table, exclude={"c"}, rng=rng)
        assert chosen is not None
        assert chosen.node_id == "b"
    assert choose_replica(table, exclude={"b", "c"}, rng=rng) is None


def test_the_less_loaded_of_two_replicas_wins() -> None:
    rng = random.Random(7)
    table = [replica("busy", running=50), replica("idle", running=0)]
    picks = {choose_replica(table, exclude=(), rng=rng).node_id for _ in range(20)}  # type: ignore[union-attr]
    assert picks == {"idle"}


def test_a_generated_key_parses_and_matches_only_its_own_hash() -> None:
    full, parsed = generate_key()
    again = parse_key(full)
    assert again == parsed
    assert secret_matches(parsed.secret, hash_secret(parsed.secret))
    assert not secret_matches(parsed.secret + "x", hash_secret(parsed.secret))


def test_malformed_keys_are_refused_before_any_lookup() -> None:
    for raw in ("", "sk-abc", "cic-XYZXYZXYZXYZ-" + "s" * 20, "cic-0123456789ab-short", "x" * 300):
        assert parse_key(raw) is None


def test_degraded_replicas_serve_only_when_nothing_else_can() -> None:
    rng = random.Random(3)
    degraded = Replica(node_id="d", deployment_id="d", model="m", endpoint="http://d",
                       degraded=True)  # fmt: skip
    table = [degraded, replica("ok")]
    assert {choose_replica(table, (), rng).node_id for _ in range(20)} == {"ok"}  # type: ignore[union-attr]
    assert choose_replica(table, {"ok"}, rng) == degraded
