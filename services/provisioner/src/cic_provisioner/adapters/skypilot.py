"""The SkyPilot backend: one-node clusters launched, listed and taken down with the SDK.

The SDK blocks (since SkyPilot 0.10 each call returns a request id that ``sky.get``
waits on), so every call runs in a worker thread, under a timeout, with at most
``concurrency`` launches at once: one slow launch never stalls the others.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from cic_common.events import NodeSpec

from cic_provisioner.domain.compute import CLUSTER_PREFIX, Cluster, LaunchError, node_id_of
from cic_provisioner.domain.failures import classify
from cic_provisioner.domain.tasks import (
    ENGINE_PORT,
    AgentInstall,
    BadSpec,
    RenderedTask,
    render_task,
)

__all__ = ["SkyPilotBackend"]

log = logging.getLogger(__name__)


def _sky() -> Any:
    """SkyPilot is imported on first use: it is heavy, and most tests never need it."""
    import sky

    return sky


def _field(record: Any, name: str) -> Any:
    return record.get(name) if isinstance(record, dict) else getattr(record, name, None)


class SkyPilotBackend:
    name = "skypilot"

    def __init__(
        self,
        *,
        nats_url: str,
        install: AgentInstall,
        concurrency: int = 4,
        launch_timeout: float = 1800.0,
        call_timeout: float = 300.0,
    ) -> None:
        self._nats_url = nats_url
        self._install = install
        self._slots = asyncio.Semaphore(concurrency)
        self._launch_timeout = launch_timeout
        self._call_timeout = call_timeout

    def cluster_name(self, node_id: str, spec: NodeSpec) -> str:
        return self.render(node_id, spec, "").cluster_name

    def render(self, node_id: str, spec: NodeSpec, secret: str) -> RenderedTask:
        try:
            return render_task(node_id, spec, secret, nats_url=self._nats_url,
                               install=self._install)  # fmt: skip
        except BadSpec as exc:
            raise LaunchError(str(exc), retryable=False, reason_class="bad_spec") from exc

    async def launch(self, node_id: str, spec: NodeSpec, secret: str) -> Cluster:
        rendered = self.render(node_id, spec, secret)
        async with self._slots:
            try:
                existing = await self._find(node_id)
                if existing is not None:
                    return existing  # a redelivered launch: the cluster is already there
                await self._launch(rendered)
            except LaunchError:
                raise
            except Exception as exc:  # the SDK's, its API server's or the cloud's error
                failure = classify(type(exc).__name__, str(exc))
                log.warning("launch failed", extra={"node_id": node_id, "reason": failure.reason})
                raise LaunchError(failure.reason, retryable=failure.retryable,
                                  reason_class=failure.reason_class) from exc  # fmt: skip
        endpoint = await self._endpoint(rendered.cluster_name)
        return Cluster(rendered.cluster_name, node_id, self.name, datetime.now(UTC),
                       endpoint=endpoint)  # fmt: skip

    async def _launch(self, rendered: RenderedTask) -> None:
        request: dict[str, Any] = {}
        try:
            await asyncio.wait_for(
                asyncio.to_thread(self._launch_blocking, rendered, request), self._launch_timeout
            )
        except TimeoutError as exc:
            await self._cancel(request.get("id"))
            raise LaunchError(
                f"launch of {rendered.cluster_name} took over {self._launch_timeout:.0f} s",
                reason_class="timeout",
            ) from exc

    async def _endpoint(self, cluster: str) -> str | None:
        """The engine's public address as SkyPilot opened it; None if it cannot say
        (the node's own ``node-ready`` carries its address anyway)."""

        def endpoints() -> dict[int, str]:
            sky = _sky()
            found: dict[int, str] = sky.get(sky.endpoints(cluster, ENGINE_PORT))
            return found

        try:
            found = await asyncio.wait_for(asyncio.to_thread(endpoints), self._call_timeout)
        except Exception:
            log.warning("no endpoint from SkyPilot", extra={"cluster": cluster}, exc_info=True)
            return None
        address = found.get(ENGINE_PORT)
        if not address:
            return None
        return address if address.startswith("http") else f"http://{address}"

    def _launch_blocking(self, rendered: RenderedTask, request: dict[str, Any]) -> None:
        sky = _sky()
        task = sky.Task.from_yaml_config({**rendered.config, "secrets": rendered.secrets})
        request["id"] = sky.launch(task, cluster_name=rendered.cluster_name, down=False)
        sky.get(request["id"])

    async def _cancel(self, request_id: Any) -> None:
        if request_id is None:
            return
        try:
            await asyncio.to_thread(_sky().api_cancel, request_id)
        except Exception:
            log.warning("could not cancel SkyPilot request", exc_info=True)

    async def terminate(self, node_id: str, *, graceful: bool) -> bool:
        cluster = await self._find(node_id)
        if cluster is None:
            return False

        def down() -> None:
            sky = _sky()
            sky.get(sky.down(cluster.name, graceful=graceful))

        await asyncio.wait_for(asyncio.to_thread(down), self._call_timeout)
        return True

    async def inventory(self) -> list[Cluster]:
        def status() -> list[Any]:
            sky = _sky()
            records: list[Any] = sky.get(sky.status(all_users=True))
            return records

        records = await asyncio.wait_for(asyncio.to_thread(status), self._call_timeout)
        clusters = []
        for record in records:
            name = str(_field(record, "name") or "")
            node_id = node_id_of(name)
            if not name.startswith(CLUSTER_PREFIX) or node_id is None:
                continue
            launched = _field(record, "launched_at") or 0
            status = _field(record, "status")
            clusters.append(
                Cluster(name, node_id, self.name, datetime.fromtimestamp(launched, UTC),
                        status=str(getattr(status, "value", status) or "UNKNOWN"))
            )  # fmt: skip
        return clusters

    async def _find(self, node_id: str) -> Cluster | None:
        for cluster in await self.inventory():
            if cluster.node_id == node_id:
                return cluster
        return None
