"""Scenario 3: every service runs twice, and one instance of each is killed (SIGKILL) in
the middle of work — a scale-up's launches in flight, steady load on both gateways. The
survivors take over: the deployment converges with one agent per node, health's shards
and the reconciler's lease change hands, and the surviving gateway fails no request."""

from __future__ import annotations

import asyncio
import os
import signal
from functools import partial

import pytest
from chaos_harness import (
    FIGURES,
    Deployed,
    SteadyLoad,
    deploy,
    node_statuses,
    serving_nodes,
    spawns_of,
)
from cic_common.bus import Bus
from cic_common.processes import free_port
from cic_common.replicas import ReplicaTable
from cic_local.platform import ServiceSpec, local_tuning
from conftest import Running, Servers
from redis.asyncio import Redis
from support import eventually, published

pytestmark = pytest.mark.chaos

MODEL = "chaos-instances"
SECOND_GATEWAY = free_port()


@pytest.fixture
def platform_services() -> tuple[ServiceSpec, ...]:
    """Each service twice; the second gateway on a port of its own."""
    first = local_tuning()
    port = {"CIC_PORT": str(SECOND_GATEWAY)}
    second = tuple(
        ServiceSpec(f"{s.name}-2", s.module, {**s.env, **(port if s.name == "gateway" else {})})
        for s in first
    )
    return first + second


@pytest.fixture
def platform_env() -> dict[str, str]:
    return {"CIC_LOCAL_LAUNCH_DELAY": "3"}  # launches long enough to be killed amid


async def reports(deployed: Deployed) -> list[dict[str, object]]:
    answer = await deployed.running.admin.get("/admin/reconcile/reports", params={"limit": 500})
    found: list[dict[str, object]] = answer.json()["data"]
    return found


async def a_pass_after(deployed: Deployed, seen: int) -> dict[str, object] | None:
    found = await reports(deployed)
    return found[0] if len(found) > seen else None


async def listed(table: ReplicaTable, count: int) -> bool:
    return len(await table.replicas(MODEL)) == count


async def test_one_of_two_instances_of_each_service_killed_mid_work_loses_nothing(
    running: Running, servers: Servers, bus: Bus
) -> None:
    deployed = await deploy(running, MODEL, replicas=2, engine_args=["--token-delay", "0.01"])
    platform = running.platform
    load = SteadyLoad(deployed, workers=4)
    doomed = SteadyLoad(deployed, workers=2, base_url=f"http://127.0.0.1:{SECOND_GATEWAY}")
    async with load.running():
        async with doomed.running():
            await asyncio.sleep(2)
            scaled = await running.admin.patch(
                f"/admin/deployments/{deployed.deployment_id}", json={"replicas": 4}
            )
            assert scaled.status_code == 200, scaled.text
            await asyncio.sleep(1.5)  # launches under way
            killed = {}
            for name in ("scheduler", "provisioner", "health", "reconciler", "gateway"):
                pid = platform.pid(f"{name}-2")
                assert pid is not None, f"{name}-2 is not running"
                os.kill(pid, signal.SIGKILL)
                killed[name] = pid
        # the killed gateway's own clients stop here: what they had in flight is lost
        seen = len(await reports(deployed))
        await eventually(partial(serving_nodes, deployed, set(), 4), within=180, every=0.5)
        redis = Redis.from_url(servers.redis_url)
        try:  # the surviving health instance writes every node, its shards and the others'
            await eventually(partial(listed, ReplicaTable(redis), 4), within=120)
        finally:
            await redis.aclose()
        report = await eventually(partial(a_pass_after, deployed, seen), within=60)
        assert report is not None
        await asyncio.sleep(2)
    nodes = await node_statuses(deployed)
    spawns = {node: spawns_of(platform, node) for node in nodes}
    requested = await published(bus, "cic.launch-requested.>")
    lost_in_flight = len(doomed.errors)
    scenario = load.scenario(
        "one of two instances of each service SIGKILLed mid-scale-up",
        notes=f"the killed gateway's own clients lost {lost_in_flight} in flight",
    )
    scenario.launches = len(nodes)
    scenario.duplicate_launches = sum(count - 1 for count in spawns.values() if count > 1)
    scenario.orphans = len(report["orphans"]) if isinstance(report["orphans"], list) else None
    FIGURES.record(scenario)
    assert load.errors == [], (load.errors[:3], load.errors[-3:])
    assert lost_in_flight <= 2  # at most what its two clients had in flight when it died
    assert list(spawns.values()) == [1] * 4  # one agent per node, whoever launched it
    assert requested >= 4
    assert report["orphans"] == []
    assert report["lost"] == []
