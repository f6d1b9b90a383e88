"""Scenario 6 at the network: every packet to and from a node's engine port and its agent's
NATS connection dropped (iptables, on the loopback interface), its processes left running.
Heartbeats stop and polls fail, so by the decision matrix the node is unhealthy: out of
routing at once. Cut for 16 s (short of `dead_after`), it comes back once its polls
answer again and stays; cut for 50 s, it is dead, replaced and terminated, and never
comes back. No request fails: the gateway retries what the cut node does not answer."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from functools import partial
from urllib.parse import urlsplit

import pytest
from chaos_harness import (
    FIGURES,
    Deployed,
    SteadyLoad,
    agents_of,
    deploy,
    node_statuses,
    serving_nodes,
)
from cic_common.bus import Bus
from cic_local.infra import PrivateNats
from conftest import Running
from support import eventually, published
from test_network_faults import transitions, watch

MODEL = "chaos-network-cut"
DEAD_AFTER = 30.0
"""The local platform's ``CIC_DEAD_AFTER``."""


def _iptables(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["iptables", "-w", *args], capture_output=True, text=True, check=False)


def _why_not() -> str | None:
    """Why packets cannot be dropped here, if they cannot."""
    if shutil.which("iptables") is None:
        return "needs iptables (apt-get install iptables)"
    probe = _iptables("-L", "OUTPUT", "-n")
    return None if probe.returncode == 0 else f"iptables refused: {probe.stderr.strip()}"


pytestmark = [
    pytest.mark.chaos,
    pytest.mark.skipif(_why_not() is not None, reason=str(_why_not())),
]


def socket_ports(pid: int, remote_port: int) -> set[int]:
    """The local ports of ``pid``'s TCP connections to ``remote_port``."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == remote_port:
                    ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


@contextlib.contextmanager
def network_cut(ports: set[int]) -> Iterator[None]:
    """Every TCP packet from or to ``ports`` dropped until the block ends."""
    chain = f"CIC_CUT_{secrets.token_hex(3).upper()}"
    assert _iptables("-N", chain).returncode == 0
    try:
        for port in sorted(ports):
            for direction in ("--sport", "--dport"):
                rule = ["-o", "lo", "-p", "tcp", direction, str(port), "-j", "DROP"]
                done = _iptables("-A", chain, *rule)
                assert done.returncode == 0, done.stderr
        assert _iptables("-I", "OUTPUT", "1", "-j", chain).returncode == 0
        yield
    finally:
        _iptables("-D", "OUTPUT", "-j", chain)
        _iptables("-F", chain)
        _iptables("-X", chain)


async def node_ports(deployed: Deployed, node_id: str, nats_port: int) -> set[int]:
    """The node's engine port and its agent's connections to NATS."""
    listed = await deployed.running.admin.get(
        "/admin/nodes", params={"deployment_id": deployed.deployment_id}
    )
    endpoint = next(n["endpoint"] for n in listed.json()["data"] if n["id"] == node_id)
    engine_port = urlsplit(endpoint).port
    assert engine_port is not None
    agents = agents_of(node_id)
    assert len(agents) == 1, agents
    agent_ports = socket_ports(agents[0], nats_port)
    assert agent_ports, "the agent has no connection to NATS"
    return {engine_port, *agent_ports}


async def test_a_node_cut_off_at_the_network_is_judged_by_the_matrix_and_never_flaps(
    running: Running, bus: Bus, private_nats: PrivateNats
) -> None:
    deployed = await deploy(running, MODEL, replicas=2, engine_args=["--token-delay", "0.01"])
    short, long = sorted(await node_statuses(deployed))
    load = SteadyLoad(deployed, workers=4)
    async with load.running():
        with network_cut(await node_ports(deployed, short, private_nats.port)):
            during_short = await watch(deployed, short, 16)
        after_short = await watch(deployed, short, 10)
        with network_cut(await node_ports(deployed, long, private_nats.port)):
            during_long = await watch(deployed, long, DEAD_AFTER + 20)
            await eventually(partial(serving_nodes, deployed, {long}, 2), within=120)
        after_long = await watch(deployed, long, 8)
    launches = await published(bus, "cic.launch-requested.>")
    scenario = load.scenario(
        "a node's network cut (iptables), 16 s and 50 s",
        notes=f"short cut: {' → '.join(transitions(during_short + after_short))}; long cut: "
        f"{' → '.join(transitions(during_long + after_long))}",
    )
    scenario.launches, scenario.duplicate_launches = launches, max(0, launches - 3)
    FIGURES.record(scenario)
    assert load.errors == [], (load.errors[:3], load.errors[-3:])
    # short: out of routing while its polls fail, back once they answer, and it stays
    assert "unhealthy" in during_short
    assert "dead" not in during_short + after_short
    assert after_short[-1] == "active"
    assert transitions(after_short).count("active") == 1
    # long: unhealthy past dead_after is dead, replaced and terminated; never back
    path = transitions(during_long + after_long)
    assert "dead" in path
    assert "active" not in path[path.index("dead") :]
    assert launches == 3  # two, then one replacement
