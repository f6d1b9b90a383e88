"""The local platform: every control-plane service as a process on this host."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from cic_common.bus import Bus
from cic_common.events import TerminateRequested
from cic_common.processes import carries_env

from cic_local.embedded import stop_pid

__all__ = [
    "SERVICES",
    "Platform",
    "ServiceSpec",
    "local_tuning",
    "stop_nodes",
    "terminate_nodes",
]


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str
    env: dict[str, str] = field(default_factory=dict)


def local_tuning() -> tuple[ServiceSpec, ...]:
    """Each service with the short periods that suit one machine and a demo."""
    return (
        ServiceSpec("provisioner", "cic_provisioner", {"CIC_HEARTBEAT_INTERVAL": "2"}),
        ServiceSpec(
            "scheduler",
            "cic_scheduler",
            {"CIC_RECONCILE_INTERVAL": "2", "CIC_AUTOSCALE_INTERVAL": "2"},
        ),
        ServiceSpec(
            "health",
            "cic_health",
            {
                "CIC_CHECK_INTERVAL": "1",
                "CIC_LATE_AFTER": "10",
                "CIC_POLL_INTERVAL": "2",
                "CIC_DEAD_AFTER": "30",
            },
        ),
        ServiceSpec(
            "reconciler",
            "cic_reconciler",
            {
                "CIC_RECONCILE_INTERVAL": "10",
                "CIC_ORPHAN_GRACE": "60",
                "CIC_GHOST_GRACE": "20",
                "CIC_STUCK_LAUNCH": "60",
                "CIC_GIVE_UP_LAUNCH": "300",
            },
        ),
        ServiceSpec("gateway", "cic_gateway"),
    )


SERVICES = local_tuning()


class Platform:
    """Starts, watches and stops the services; state under ``state_dir``.

    Each service runs in its own process group with its log in ``logs/<name>.log`` and
    its pid in ``pids/<name>.pid``, so ``stop`` works from another process too (the
    ``down`` command) and nothing outlives it.
    """

    def __init__(
        self,
        state_dir: Path,
        env: dict[str, str],
        services: tuple[ServiceSpec, ...] = SERVICES,
    ) -> None:
        self.state_dir = state_dir
        self._env = env
        self._services: tuple[ServiceSpec, ...] = services
        self._pids = state_dir / "pids"
        self._logs = state_dir / "logs"

    def start(self) -> None:
        """Start every service not already running; idempotent."""
        self._pids.mkdir(parents=True, exist_ok=True)
        self._logs.mkdir(parents=True, exist_ok=True)
        for spec in self._services:
            if self.pid(spec.name) is not None:
                continue
            env = {
                **os.environ,
                "CIC_STATE_DIR": str(self.state_dir),
                **self._env,
                **spec.env,
                "CIC_INSTANCE_ID": f"{spec.name}-local",
            }
            with (self._logs / f"{spec.name}.log").open("ab") as log:
                child = subprocess.Popen(
                    [sys.executable, "-m", spec.module],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            (self._pids / f"{spec.name}.pid").write_text(str(child.pid))

    def pid(self, name: str) -> int | None:
        """The running service's pid, or None."""
        try:
            pid = int((self._pids / f"{name}.pid").read_text())
        except (OSError, ValueError):
            return None
        return pid if carries_env(pid, "CIC_INSTANCE_ID", f"{name}-local") else None

    def running(self) -> dict[str, int | None]:
        return {s.name: self.pid(s.name) for s in self._services}

    def log_tail(self, name: str, lines: int = 20) -> str:
        try:
            text = (self._logs / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0, only: Collection[str] | None = None) -> list[str]:
        """Stop every service, or ``only`` those (the gateway first, so no new work
        arrives); the names of those that were running."""
        stopped = []
        for spec in reversed(self._services):
            if only is not None and spec.name not in only:
                continue
            pid = self.pid(spec.name)
            if pid is not None:
                stop_pid(pid, timeout)
                stopped.append(spec.name)
            (self._pids / f"{spec.name}.pid").unlink(missing_ok=True)
        return stopped


def _node_ids(state_dir: Path) -> list[str]:
    return sorted(m.parent.name for m in (state_dir / "nodes").glob("*/meta.json"))


async def terminate_nodes(nats_url: str, state_dir: Path, within: float = 30.0) -> None:
    """Ask the provisioner to terminate every local node, and wait until it has."""
    bus = await Bus.connect(nats_url, producer="cic-local", declare=False)
    try:
        for node_id in _node_ids(state_dir):
            await bus.publish(TerminateRequested(node_id=node_id, reason="platform down"))
        for _ in range(int(within / 0.1)):
            if not _node_ids(state_dir):
                break
            await asyncio.sleep(0.1)
    finally:
        await bus.close()


def stop_nodes(state_dir: Path, timeout: float = 15.0) -> list[str]:
    """Stop every local node agent recorded under ``state_dir/nodes``; their ids.

    The provisioner leaves nodes running when it stops (a restarted provisioner finds
    them again), so tearing the whole platform down stops them here.
    """
    stopped = []
    nodes = state_dir / "nodes"
    if not nodes.exists():
        return []
    for meta_file in sorted(nodes.glob("*/meta.json")):
        with contextlib.suppress(OSError, ValueError, KeyError):
            pid = int(json.loads(meta_file.read_text())["pid"])
            if carries_env(pid, "CIC_NODE_ID", meta_file.parent.name):
                stop_pid(pid, timeout)
                stopped.append(meta_file.parent.name)
            meta_file.unlink()
    return stopped
