"""The local backend: each node is a node-agent process on this host."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from cic_common.events import NodeSpec
from cic_common.processes import alive, carries_env, free_port

from cic_provisioner.domain.compute import Cluster, LaunchError, cluster_name

__all__ = ["LocalBackend"]

log = logging.getLogger(__name__)


class LocalBackend:
    """Runs ``python -m cic_node_agent`` per node, in its own process group.

    State lives under ``state_dir/nodes/<node id>/`` (``meta.json``, ``agent.log``), so
    any provisioner instance on this host sees the same nodes and a restarted one
    finds them again. The agent and its engine share a process group that
    ``terminate`` signals as a whole: nothing is left behind.
    """

    name = "local"

    def __init__(
        self,
        state_dir: Path,
        *,
        nats_url: str,
        heartbeat_interval: float,
        stop_timeout: float = 15.0,
        extra_env: dict[str, str] | None = None,
        launch_delay: float = 0.0,
    ) -> None:
        self._dir = state_dir / "nodes"
        self._nats_url = nats_url
        self._heartbeat_interval = heartbeat_interval
        self._stop_timeout = stop_timeout
        self._extra = extra_env or {}
        """Besides: ``{node_id}`` in a value is the node's id."""
        self._launch_delay = launch_delay
        """Seconds a launch takes before its node starts, as a cloud's does (for tests)."""
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = asyncio.Lock()

    def cluster_name(self, node_id: str, spec: NodeSpec) -> str:
        return cluster_name(provider="local", region="host", gpu="cpu", spot=False,
                            node_id=node_id)  # fmt: skip

    async def launch(self, node_id: str, spec: NodeSpec, secret: str) -> Cluster:
        if self._launch_delay and self._meta(node_id) is None:
            await asyncio.sleep(self._launch_delay)
        async with self._lock:
            running = self._meta(node_id)
            if running is not None:
                return running
            try:
                return self._spawn(node_id, spec, secret)
            except OSError as exc:
                raise LaunchError(f"could not start the node agent: {exc}") from exc

    async def terminate(self, node_id: str, *, graceful: bool) -> bool:
        running = self._meta(node_id)
        if running is None or running.pid is None:
            self._reap(node_id)
            return False
        pid = running.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM if graceful else signal.SIGKILL)
        deadline = asyncio.get_running_loop().time() + self._stop_timeout
        while alive(pid) and asyncio.get_running_loop().time() < deadline:
            self._reap(node_id, block=False)
            await asyncio.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # whatever of the group is still there
        self._reap(node_id)
        (self._dir / node_id / "meta.json").unlink(missing_ok=True)
        return True

    async def inventory(self) -> list[Cluster]:
        clusters = []
        if not self._dir.exists():
            return []
        for node_dir in sorted(self._dir.iterdir()):
            cluster = self._meta(node_dir.name)
            if cluster is not None:
                clusters.append(cluster)
        return clusters

    def _spawn(self, node_id: str, spec: NodeSpec, secret: str) -> Cluster:
        node_dir = self._dir / node_id
        node_dir.mkdir(parents=True, exist_ok=True)
        name = self.cluster_name(node_id, spec)
        port = free_port()
        env = {
            **_inherited(os.environ),
            **{name: value.replace("{node_id}", node_id) for name, value in self._extra.items()},
            "CIC_NODE_ID": node_id,
            "CIC_NODE_SECRET": secret,
            "CIC_NODE_MODEL": spec.model,
            "CIC_NODE_ENGINE": spec.engine,
            "CIC_NODE_MAX_MODEL_LEN": str(spec.max_model_len),
            "CIC_NODE_ENGINE_ARGS": json.dumps(list(spec.engine_args)),
            "CIC_DRAIN_TIMEOUT": str(max(1.0, self._stop_timeout - 3)),
            "CIC_ENGINE_PORT": str(port),
            "CIC_NATS_URL": self._nats_url,
            "CIC_HEARTBEAT_INTERVAL": str(self._heartbeat_interval),
            "CIC_INSTANCE_ID": name,
        }
        with (node_dir / "agent.log").open("ab") as log_file:
            child = subprocess.Popen(
                [sys.executable, "-m", "cic_node_agent"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._children[node_id] = child
        launched_at = datetime.now(UTC)
        endpoint = f"http://127.0.0.1:{port}"
        meta = {"pid": child.pid, "cluster_name": name, "launched_at": launched_at.isoformat(),
                "endpoint": endpoint}  # fmt: skip
        tmp = node_dir / "meta.json.tmp"
        tmp.write_text(json.dumps(meta))
        tmp.replace(node_dir / "meta.json")
        log.info("node agent started", extra={"node_id": node_id, "pid": child.pid})
        return Cluster(name, node_id, self.name, launched_at, pid=child.pid, endpoint=endpoint)

    def _meta(self, node_id: str) -> Cluster | None:
        """The node's record, if its agent is still the process that holds it."""
        try:
            meta = json.loads((self._dir / node_id / "meta.json").read_text())
            pid = int(meta["pid"])
            cluster = Cluster(
                name=str(meta["cluster_name"]),
                node_id=node_id,
                backend=self.name,
                launched_at=datetime.fromisoformat(meta["launched_at"]),
                pid=pid,
                endpoint=meta.get("endpoint"),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return cluster if carries_env(pid, "CIC_NODE_ID", node_id) else None

    def _reap(self, node_id: str, *, block: bool = True) -> None:
        """Collect our own child's exit status so it does not linger as a zombie."""
        child = self._children.get(node_id)
        if child is None:
            return
        if block:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=1)
        if child.poll() is not None:
            self._children.pop(node_id, None)


_KEPT = frozenset({"CIC_LOG_LEVEL", "CIC_LOG_FORMAT"})


def _inherited(environ: Mapping[str, str]) -> dict[str, str]:
    """What a local node inherits of the provisioner's environment: all but the control
    plane's own settings (its database, Redis, admin key), which a node has no use for
    and should not hold; what a node needs is set for it by name."""
    return {k: v for k, v in environ.items() if not k.startswith("CIC_") or k in _KEPT}
