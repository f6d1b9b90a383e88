"""The provisioner on real NATS and PostgreSQL with its local backend: poison is set
aside with its reason, and the next good command is still served."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar

import asyncpg
import pytest
from cic_common.bus import Bus
from cic_common.db import create_pool, migrate
from cic_common.events import LaunchRequested, NodeSpec, TerminateRequested, encode
from cic_common.processes import alive, carries_env
from cic_common.service import Part
from cic_common.streams import INVENTORY_SUBJECT
from cic_provisioner.adapters.local import LocalBackend
from cic_provisioner.adapters.store import ProvisionerStore
from cic_provisioner.domain.compute import Cluster
from cic_provisioner.entrypoints.handlers import LaunchInProgress, Provisioner
from conftest import Servers
from support import dead_letters, envelope_for, eventually


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database)
    await migrate(pool)
    await pool.execute(
        "INSERT INTO deployments (id, name, model, replicas) VALUES ('dprov', 'prov', 'demo', 0)"
        " ON CONFLICT DO NOTHING"
    )
    yield pool
    await pool.close()


@pytest.fixture
async def provisioner(
    bus: Bus,
    pool: asyncpg.Pool,
    servers: Servers,
    tmp_path: Path,
) -> AsyncIterator[tuple[Provisioner, LocalBackend]]:
    backend = LocalBackend(tmp_path, nats_url=servers.nats_url, heartbeat_interval=1)
    provisioner = Provisioner(ProvisionerStore(pool), {"local": backend}, bus)
    consumers: list[Part] = [
        bus.consumer(LaunchRequested, "prov-launch", provisioner.on_launch_requested),
        bus.consumer(TerminateRequested, "prov-terminate", provisioner.on_terminate_requested),
    ]
    tasks = [asyncio.create_task(c.run()) for c in consumers]
    inventory = await bus.nc.subscribe(INVENTORY_SUBJECT, cb=provisioner.on_inventory_request)
    yield provisioner, backend
    await inventory.unsubscribe()
    for consumer in consumers:
        consumer.stop()
    await asyncio.gather(*tasks)
    for cluster in await backend.inventory():
        await backend.terminate(cluster.node_id, graceful=False)


async def test_malformed_launch_goes_to_the_dead_letter_subject_and_the_next_is_served(
    bus: Bus,
    pool: asyncpg.Pool,
    provisioner: tuple[Provisioner, LocalBackend],
) -> None:
    _, backend = provisioner
    # What `nats pub cic.launch-requested.nbad '{"oops":'` does: a plain core publish.
    await bus.nc.publish("cic.launch-requested.nbad", b'{"oops":')
    good = LaunchRequested(node_id="ngood", deployment_id="dprov", spec=NodeSpec(model="demo"))
    await bus.nc.publish(good.subject(), encode(good, producer="nats-cli")[1])
    await bus.nc.flush()

    letters = await eventually(lambda: dead_letters(bus, "cic.launch-requested.nbad"))
    body, headers = letters[0]
    assert body == b'{"oops":'
    assert headers["Cic-Dlq-Reason"].startswith("not an event envelope")
    assert headers["Cic-Original-Subject"] == "cic.launch-requested.nbad"

    async def status() -> str | None:
        value: str | None = await pool.fetchval("SELECT status FROM nodes WHERE id = 'ngood'")
        return value if value == "initializing" else None

    await eventually(status)
    clusters = await backend.inventory()
    assert [c.node_id for c in clusters] == ["ngood"]
    assert clusters[0].name == "cic-local-host-cpu-od-ngood"
    assert clusters[0].pid is not None
    assert alive(clusters[0].pid)


async def test_a_launch_for_an_unknown_deployment_is_dead_lettered_with_its_reason(
    bus: Bus,
    provisioner: tuple[Provisioner, LocalBackend],
) -> None:
    orphan = LaunchRequested(node_id="nnodep", deployment_id="dnone", spec=NodeSpec(model="m"))
    await bus.publish(orphan)
    letters = await eventually(lambda: dead_letters(bus, "cic.launch-requested.nnodep"))
    assert letters[0][1]["Cic-Dlq-Reason"] == "no live deployment 'dnone'"
    assert await provisioner[1].inventory() == []


async def test_terminate_stops_the_node_and_inventory_answers_on_request(
    bus: Bus,
    pool: asyncpg.Pool,
    provisioner: tuple[Provisioner, LocalBackend],
) -> None:
    _, backend = provisioner
    launch = LaunchRequested(node_id="nterm", deployment_id="dprov", spec=NodeSpec(model="demo"))
    await bus.publish(launch, msg_id="launch:nterm")
    clusters = await eventually(backend.inventory)
    reply = await bus.nc.request(INVENTORY_SUBJECT, b"{}", timeout=10)
    listed = json.loads(reply.data)
    assert listed["complete"] is True
    assert [c["node_id"] for c in listed["clusters"]] == ["nterm"]

    await bus.publish(TerminateRequested(node_id="nterm", graceful=True))

    async def terminated() -> bool:
        status = await pool.fetchval("SELECT status FROM nodes WHERE id = 'nterm'")
        return bool(status == "terminated")

    await eventually(terminated)
    assert clusters[0].pid is not None
    assert not alive(clusters[0].pid)
    assert await backend.inventory() == []


def agent_pids(node_id: str) -> list[int]:
    """Node agent processes (not their engines) started for ``node_id``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or not carries_env(int(entry), "CIC_NODE_ID", node_id):
            continue
        argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        if b"cic_node_agent" in argv:
            found.append(int(entry))
    return found


class SlowBackend(LocalBackend):
    """A backend whose launches take a while, as a cloud's do; counts launches in flight."""

    in_flight: ClassVar[list[int]] = [0]
    most: ClassVar[list[int]] = [0]

    async def launch(self, node_id: str, spec: NodeSpec, secret: str) -> Cluster:
        self.in_flight[0] += 1
        self.most[0] = max(self.most[0], self.in_flight[0])
        try:
            await asyncio.sleep(0.3)
            return await super().launch(node_id, spec, secret)
        finally:
            self.in_flight[0] -= 1


async def test_two_provisioners_given_the_same_launch_start_one_node(
    bus: Bus, pool: asyncpg.Pool, servers: Servers, tmp_path: Path
) -> None:
    backends = [
        SlowBackend(tmp_path, nats_url=servers.nats_url, heartbeat_interval=1) for _ in range(2)
    ]
    instances = [Provisioner(ProvisionerStore(pool), {"local": b}, bus) for b in backends]
    event = LaunchRequested(node_id="ntwice", deployment_id="dprov", spec=NodeSpec(model="demo"))
    envelope = envelope_for(event)
    outcomes = await asyncio.gather(
        *(p.on_launch_requested(event, envelope) for p in instances), return_exceptions=True
    )
    try:
        # One launched; the other either found it launched or was told to come back.
        assert all(o is None or isinstance(o, LaunchInProgress) for o in outcomes), outcomes
        await instances[0].on_launch_requested(event, envelope)  # the redelivery
        await instances[1].on_launch_requested(event, envelope)
        running = [c.pid for c in await backends[0].inventory()]
        agents = agent_pids("ntwice")
        assert len(running) == 1
        assert agents == running
        assert SlowBackend.most[0] == 1  # never two launches of the node at once
        status = await pool.fetchval("SELECT status FROM nodes WHERE id = 'ntwice'")
        assert status == "initializing"
    finally:
        await backends[0].terminate("ntwice", graceful=False)
    assert await backends[1].inventory() == []
