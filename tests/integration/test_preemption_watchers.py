"""Each cloud's watcher against a local HTTP server speaking that cloud's documented
metadata protocol: the token flow, 404 against a notice, and ``wait_for_change``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cic_local.metadata_server import MetadataState, create_app
from cic_node_agent.adapters.metadata import (
    AwsSpotWatcher,
    AzureEventsWatcher,
    GcpPreemptionWatcher,
)
from support import serving


class Cloud:
    def __init__(self, url: str, state: MetadataState) -> None:
        self.url = url
        self.state = state
        self.control = httpx.AsyncClient(base_url=url)

    async def notice(self, in_seconds: float, rebalance: bool = False) -> datetime:
        answer = await self.control.post(
            "/_control/notice", json={"in_seconds": in_seconds, "rebalance": rebalance}
        )
        return datetime.fromisoformat(answer.json()["deadline"].replace("Z", "+00:00"))


@pytest.fixture
async def cloud() -> AsyncIterator[Cloud]:
    state = MetadataState(vm_name="vm-under-test")
    async with serving(create_app(state)) as url:
        cloud = Cloud(url, state)
        yield cloud
        await cloud.control.aclose()


def now() -> datetime:
    return datetime.now(UTC)


async def test_aws_takes_a_token_then_reads_404_until_the_notice(cloud: Cloud) -> None:
    watcher = AwsSpotWatcher(cloud.url)
    try:
        assert await watcher.poll(now()) is None
        assert len(cloud.state.tokens) == 1
        deadline = await cloud.notice(120)
        notice = await watcher.poll(now())
        assert notice is not None
        assert notice.deadline == deadline
        assert notice.source == "aws-spot-instance-action"
        assert watcher.rebalance_recommended is False
    finally:
        await watcher.close()


async def test_aws_renews_an_expired_token(cloud: Cloud) -> None:
    watcher = AwsSpotWatcher(cloud.url)
    try:
        await watcher.poll(now())
        cloud.state.tokens.clear()  # every token the instance handed out has expired
        await cloud.notice(120)
        assert await watcher.poll(now()) is not None
        assert len(cloud.state.tokens) == 1
    finally:
        await watcher.close()


async def test_aws_rebalance_recommendation_is_flagged_without_a_notice(cloud: Cloud) -> None:
    watcher = AwsSpotWatcher(cloud.url)
    try:
        await cloud.notice(0, rebalance=True)
        assert await watcher.poll(now()) is None
        assert watcher.rebalance_recommended is True
    finally:
        await watcher.close()


async def test_imds_refuses_requests_without_a_token(cloud: Cloud) -> None:
    bare = await cloud.control.get("/latest/meta-data/spot/instance-action")
    assert bare.status_code == 401
    no_ttl = await cloud.control.put("/latest/api/token")
    assert no_ttl.status_code == 400


async def test_gcp_long_poll_returns_the_moment_preemption_is_signalled(cloud: Cloud) -> None:
    watcher = GcpPreemptionWatcher(cloud.url, wait=30)
    try:
        waiting = asyncio.create_task(watcher.poll(now()))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # wait_for_change holds the request open
        before = now()
        await cloud.notice(30)
        notice = await waiting
        assert notice is not None
        assert notice.source == "gcp-preempted"
        assert before + timedelta(seconds=29) <= notice.deadline
    finally:
        await watcher.close()


async def test_gcp_without_change_answers_false_after_the_timeout(cloud: Cloud) -> None:
    watcher = GcpPreemptionWatcher(cloud.url, wait=1)
    try:
        assert await watcher.poll(now()) is None
        refused = await cloud.control.get("/computeMetadata/v1/instance/preempted")
        assert refused.status_code == 403
    finally:
        await watcher.close()


async def test_azure_preempt_event_gives_its_not_before_as_deadline(cloud: Cloud) -> None:
    ours = AzureEventsWatcher(cloud.url, vm_name="vm-under-test")
    other = AzureEventsWatcher(cloud.url, vm_name="some-other-vm")
    try:
        assert await ours.poll(now()) is None
        deadline = await cloud.notice(30)
        notice = await ours.poll(now())
        assert notice is not None
        assert notice.deadline == deadline.replace(microsecond=0)
        assert await other.poll(now()) is None
        refused = await cloud.control.get("/metadata/scheduledevents")
        assert refused.status_code == 400
    finally:
        await ours.close()
        await other.close()
