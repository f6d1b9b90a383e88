"""Commands and node facts published again have one effect: one launch, one termination."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx
import pytest
from chaos_harness import FIGURES, Scenario, agents_of, spawns_of
from cic_common.bus import Bus
from conftest import Running
from event_faults import Durable, consumers_by_type, settled
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from support import dead_letters, eventually, published

pytestmark = pytest.mark.chaos

MODEL = "chaos-duplicates"
COPIES = 3


@dataclass
class Replays:
    """What ``replay`` published: ``dropped`` says, for each copy with the original
    ``Nats-Msg-Id``, whether the server dropped it; the other copies were stored."""

    dropped: list[bool] = field(default_factory=list)
    stored: int = 0
    new_event_ids: list[str] = field(default_factory=list)
    last_seq: int = 0

    @property
    def published(self) -> int:
        return len(self.dropped) + self.stored


async def replay(
    bus: Bus, subject: str, data: bytes, headers: dict[str, str], *, new_events: bool
) -> Replays:
    """A message again: ``COPIES`` times as it was (a retried publish), ``COPIES`` times
    with a new ``Nats-Msg-Id`` (a publisher retrying under a fresh id), and, with
    ``new_events``, ``COPIES`` times as a new event about the same node (a second tool
    issuing the same command; node facts are signed, so only their sender could)."""
    done = Replays()
    for _ in range(COPIES):
        ack = await bus.js.publish(subject, data, headers=headers, timeout=5)
        done.dropped.append(bool(ack.duplicate))
    bodies = [data] * COPIES
    for _ in range(COPIES if new_events else 0):
        envelope: dict[str, Any] = json.loads(data)
        envelope["event_id"] = f"replay{secrets.token_hex(8)}"
        done.new_event_ids.append(envelope["event_id"])
        bodies.append(json.dumps(envelope).encode())
    for body in bodies:
        fresh = {**headers, "Nats-Msg-Id": f"replay:{secrets.token_hex(8)}"}
        done.last_seq = (await bus.js.publish(subject, body, headers=fresh, timeout=5)).seq
        done.stored += 1
    return done


async def replay_msg(bus: Bus, msg: Msg, *, new_events: bool) -> Replays:
    return await replay(bus, msg.subject, msg.data, dict(msg.headers or {}),
                        new_events=new_events)  # fmt: skip


async def next_about(sub: Subscription, key: str, value: str) -> Msg:
    """The next message on ``sub`` whose ``data.<key>`` is ``value``."""
    while True:
        msg = await sub.next_msg(timeout=60)
        if json.loads(msg.data)["data"].get(key) == value:
            return msg


async def node_events(admin: httpx.AsyncClient, node_id: str, event_type: str) -> set[str]:
    listed = (await admin.get(f"/admin/nodes/{node_id}/events")).json()["data"]
    return {str(e["event_id"]) for e in listed if e["type"] == event_type}


async def nodes_of(admin: httpx.AsyncClient, deployment_id: str) -> list[dict[str, Any]]:
    listed = await admin.get("/admin/nodes", params={"deployment_id": deployment_id})
    return list(listed.json()["data"])


async def in_status(admin: httpx.AsyncClient, deployment_id: str, status: str) -> bool:
    nodes = await nodes_of(admin, deployment_id)
    return bool(nodes) and all(n["status"] == status for n in nodes)


async def handled(bus: Bus, durables: list[Durable], subject: str, done: Replays) -> list[str]:
    """Waits until every consumer is past the replays; the reasons of those dead-lettered
    (valid events lost)."""
    await eventually(partial(settled, bus, durables, done.last_seq))
    return [h.get("Cic-Dlq-Reason", "?") for _, h in await dead_letters(bus, subject)]


async def test_a_command_or_fact_published_again_has_one_effect(running: Running, bus: Bus) -> None:
    admin, platform = running.admin, running.platform
    launch_commands = await bus.nc.subscribe("cic.launch-requested.>")
    terminate_commands = await bus.nc.subscribe("cic.terminate-requested.>")
    changed = await bus.nc.subscribe("cic.deployment-changed.>")
    created = await admin.post("/admin/deployments", json={"model": MODEL, "replicas": 1})
    assert created.status_code == 201, created.text
    deployment_id = str(created.json()["id"])

    # Replayed at once, while the node is still starting: the provisioner's hard case.
    launch = await next_about(launch_commands, "deployment_id", deployment_id)
    node_id = launch.subject.rsplit(".", 1)[1]
    launches = await replay_msg(bus, launch, new_events=True)
    change = await next_about(changed, "deployment_id", deployment_id)
    changes = await replay_msg(bus, change, new_events=True)
    await eventually(partial(in_status, admin, deployment_id, "active"), within=120)
    consumers = await consumers_by_type(bus)
    lost = await handled(bus, consumers["launch-requested"], launch.subject, launches)
    lost += await handled(bus, consumers["deployment-changed"], change.subject, changes)
    assert [n["id"] for n in await nodes_of(admin, deployment_id)] == [node_id]
    launch_ids = await node_events(admin, node_id, "launch-requested")
    agents = agents_of(node_id)

    # The node's own node-ready again; signed, so only its message id can be new.
    ready_subject = f"cic.node-ready.{node_id}"
    ready = await bus.js.get_last_msg("CIC_EVENTS", ready_subject)
    ready_at = (await nodes_of(admin, deployment_id))[0]["ready_at"]
    readies = await replay(bus, ready_subject, ready.data or b"", dict(ready.headers or {}),
                           new_events=False)  # fmt: skip
    lost += await handled(bus, consumers["node-ready"], ready_subject, readies)
    after_ready = (await nodes_of(admin, deployment_id))[0]
    ready_logged = await node_events(admin, node_id, "node-ready")

    # Deleting the deployment sends one terminate-requested; replayed, it still ends once.
    assert (await admin.delete(f"/admin/deployments/{deployment_id}")).status_code == 202
    terminate = await next_about(terminate_commands, "node_id", node_id)
    terminates = await replay_msg(bus, terminate, new_events=True)
    await eventually(partial(in_status, admin, deployment_id, "terminated"))
    lost += await handled(bus, consumers["terminate-requested"], terminate.subject, terminates)
    terminate_ids = await node_events(admin, node_id, "terminate-requested")
    for sub in (launch_commands, terminate_commands, changed):
        await sub.unsubscribe()

    every = {"launch-requested": launches, "deployment-changed": changes,
             "node-ready": readies, "terminate-requested": terminates}  # fmt: skip
    missing = set(launches.new_event_ids) - launch_ids
    missing |= set(terminates.new_event_ids) - terminate_ids
    spawned = spawns_of(platform, node_id)
    FIGURES.record(Scenario(
        "duplicate and poison events: commands and facts again",
        events_published=sum(r.published for r in every.values()),
        events_lost=len(lost) + len(missing), launches=spawned, duplicate_launches=spawned - 1,
        notes="copies: " + ", ".join(f"{t} {r.published}" for t, r in every.items()),
    ))  # fmt: skip
    assert all(d for r in every.values() for d in r.dropped), (
        "a copy with its Nats-Msg-Id was stored"
    )
    assert lost == []
    assert missing == set(), "a new event about the node was acked but not handled"
    assert spawned == 1
    assert len(agents) == 1
    assert (after_ready["status"], after_ready["ready_at"]) == ("active", ready_at)
    assert len(ready_logged) == 1
    assert agents_of(node_id) == []
    # Each handling of a terminate publishes node-terminated under one message id.
    assert await published(bus, f"cic.node-terminated.{node_id}") == 1
