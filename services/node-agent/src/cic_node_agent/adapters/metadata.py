"""Preemption watchers: each cloud's instance metadata service, polled as documented."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

import httpx

from cic_node_agent.domain.notices import (
    GCP_NOTICE,
    Notice,
    aws_instance_action,
    aws_rebalance,
    azure_preempt,
    gcp_preempted,
)

__all__ = ["WATCHERS", "AwsSpotWatcher", "AzureEventsWatcher", "GcpPreemptionWatcher", "Watcher"]

log = logging.getLogger(__name__)


class Watcher(Protocol):
    """Asks the metadata service once; a ``Notice`` when the node is being taken."""

    rebalance_recommended: bool

    async def poll(self, now: datetime) -> Notice | None: ...

    async def close(self) -> None: ...


class _HttpWatcher:
    default_base = "http://169.254.169.254"

    def __init__(self, base_url: str | None = None, timeout: float = 2.0) -> None:
        self._http = httpx.AsyncClient(base_url=base_url or self.default_base, timeout=timeout)
        self.rebalance_recommended = False

    async def close(self) -> None:
        await self._http.aclose()


class AwsSpotWatcher(_HttpWatcher):
    """IMDSv2: a session token from ``PUT /latest/api/token``, renewed when refused."""

    _TTL = "21600"

    def __init__(self, base_url: str | None = None, timeout: float = 2.0) -> None:
        super().__init__(base_url, timeout)
        self._token: str | None = None

    async def _get(self, path: str) -> httpx.Response:
        for _ in range(2):
            if self._token is None:
                answer = await self._http.put(
                    "/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": self._TTL}
                )
                answer.raise_for_status()
                self._token = answer.text
            response = await self._http.get(path, headers={"X-aws-ec2-metadata-token": self._token})
            if response.status_code != 401:
                return response
            self._token = None  # expired: take a new one
        return response

    async def poll(self, now: datetime) -> Notice | None:
        rebalance = await self._get("/latest/meta-data/events/recommendations/rebalance")
        if aws_rebalance(rebalance.status_code, rebalance.text) and not self.rebalance_recommended:
            log.warning("AWS recommends rebalancing: elevated risk of interruption")
            self.rebalance_recommended = True
        action = await self._get("/latest/meta-data/spot/instance-action")
        return aws_instance_action(action.status_code, action.text)


class GcpPreemptionWatcher(_HttpWatcher):
    """``instance/preempted`` with ``wait_for_change``: the request hangs until the value
    changes (or ``timeout_sec``), so a notice arrives the moment it is given."""

    default_base = "http://metadata.google.internal"

    def __init__(self, base_url: str | None = None, timeout: float = 2.0, wait: int = 60) -> None:
        super().__init__(base_url, timeout + wait)
        self._wait = wait

    async def poll(self, now: datetime) -> Notice | None:
        path = "/computeMetadata/v1/instance/preempted"
        params = {"wait_for_change": "true", "timeout_sec": str(self._wait)}
        response = await self._http.get(path, params=params, headers={"Metadata-Flavor": "Google"})
        response.raise_for_status()
        if not gcp_preempted(response.text):
            return None
        # The answer may come after a long wait: the 30 s run from when it arrived.
        return Notice(datetime.now(now.tzinfo) + GCP_NOTICE, "gcp-preempted")


class AzureEventsWatcher(_HttpWatcher):
    """Scheduled Events; the first call also turns the service on, so it runs at boot."""

    def __init__(
        self, base_url: str | None = None, timeout: float = 2.0, vm_name: str | None = None
    ) -> None:
        super().__init__(base_url, timeout)
        self._vm_name = vm_name

    async def poll(self, now: datetime) -> Notice | None:
        response = await self._http.get(
            "/metadata/scheduledevents",
            params={"api-version": "2020-07-01"},
            headers={"Metadata": "true"},
        )
        response.raise_for_status()
        return azure_preempt(response.text, self._vm_name, now)


WATCHERS: dict[str, Callable[[str | None, str | None], Watcher]] = {
    "aws": lambda url, _: AwsSpotWatcher(url),
    "gcp": lambda url, _: GcpPreemptionWatcher(url),
    "azure": lambda url, vm_name: AzureEventsWatcher(url, vm_name=vm_name),
}
"""Watcher factories (metadata URL, VM name) by cloud name (``CIC_CLOUD``); no entry
means no preemption to watch."""
