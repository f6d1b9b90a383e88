"""The real SkyPilot SDK path, run to SkyPilot's own error: this machine has no cloud
credentials and no internet, and that must come back as a clean, classed launch failure.

The SDK runs in a child process with a home directory of its own, so its API server
and state never touch the user's ``~/.sky``; the server is stopped afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cic_common.processes import carries_env

LAUNCH = """
import asyncio, json
from cic_common.events import NodeSpec
from cic_provisioner.adapters.skypilot import SkyPilotBackend
from cic_provisioner.domain.compute import LaunchError
from cic_provisioner.domain.tasks import AgentInstall

async def main():
    backend = SkyPilotBackend(nats_url="nats://cp:4222", install=AgentInstall(),
                              launch_timeout=600, call_timeout=300)
    spec = NodeSpec(model="m", engine="vllm", backend="skypilot", accelerator="H100:1",
                    use_spot=True)
    try:
        await backend.launch("nsdkpath", spec, "secret")
        print(json.dumps({"launched": True}))
    except LaunchError as exc:
        print(json.dumps({"class": exc.reason_class, "retryable": exc.retryable,
                          "reason": str(exc)}))

asyncio.run(main())
"""
START = "from sky.client import sdk; sdk.api_start()"
STOP = "from sky.client import sdk; sdk.api_stop()"


def start_api_server(env: dict[str, str]) -> None:
    """SkyPilot's own local API server, started before the launch: on a loaded machine
    its first start can outlast SkyPilot's 60 s wait, which is not what is under test
    (a launch that meets a dead server is classed "unreachable", see the unit tests)."""
    for _ in range(2):
        started = subprocess.run(
            [sys.executable, "-c", START], env=env, capture_output=True, text=True, timeout=300
        )
        if started.returncode == 0:
            return
    raise AssertionError(f"SkyPilot's API server did not start:\n{started.stderr[-3000:]}")


def leftovers(home: Path) -> list[int]:
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    return [pid for pid in pids if carries_env(pid, "HOME", str(home))]


def test_a_launch_without_cloud_access_fails_cleanly_with_its_class(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "SKYPILOT_DISABLE_USAGE_COLLECTION": "1"}
    try:
        start_api_server(env)
        done = subprocess.run(
            [sys.executable, "-c", LAUNCH], env=env, capture_output=True, text=True, timeout=900
        )
    finally:
        subprocess.run([sys.executable, "-c", STOP], env=env, capture_output=True, timeout=120)
    lines = done.stdout.strip().splitlines()
    last = lines[-1] if lines else ""
    assert last.startswith("{"), f"no outcome; stderr:\n{done.stderr[-3000:]}"
    outcome = json.loads(last)
    assert outcome.get("launched") is None, outcome
    assert outcome["class"] in ("unreachable", "auth"), outcome
    assert outcome["retryable"] is (outcome["class"] == "unreachable")
    assert outcome["reason"].split(":", 1)[0] in ("CloudError", "NoCloudAccessError")
    assert leftovers(tmp_path) == []
