"""Handing an upstream answer to the client: counted in flight on its replica until it
is done, and metered (its usage published once it is complete)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from cic_common.events import UsageRecorded
from fastapi import Response
from fastapi.responses import StreamingResponse

from cic_gateway.adapters.replica_view import ReplicaView
from cic_gateway.adapters.upstream import UpstreamResponse
from cic_gateway.adapters.usage import UsageMeter
from cic_gateway.domain.metering import StreamMeter, Usage, usage_of

__all__ = ["Metering", "relay"]


@dataclass(frozen=True)
class Metering:
    """Who asked for what, and where its usage goes."""

    request_id: str
    key_id: str
    model: str
    meter: UsageMeter
    strip_usage: bool
    """The gateway asked the engine for the stream's usage; the client did not."""

    def record(self, node_id: str, usage: Usage | None, streamed: bool) -> None:
        if usage is not None:
            self.meter.record(UsageRecorded(
                request_id=self.request_id, key_id=self.key_id, model=self.model,
                node_id=node_id, prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens, streamed=streamed,
            ))  # fmt: skip


async def relay(
    upstream: UpstreamResponse, node_id: str, view: ReplicaView, metering: Metering
) -> Response:
    headers = {"x-cic-replica": node_id, "x-request-id": metering.request_id}
    if upstream.content_type.startswith("text/event-stream"):
        return StreamingResponse(
            _stream(upstream.chunks(), node_id, view, metering),
            status_code=upstream.status,
            media_type="text/event-stream",
            headers={**headers, "cache-control": "no-cache"},
        )
    try:
        content = await upstream.read()
    finally:
        view.in_flight[node_id] -= 1
    if upstream.status == 200:
        metering.record(node_id, usage_of(content), streamed=False)
    return Response(content, upstream.status, headers, media_type=upstream.content_type)


async def _stream(
    chunks: AsyncIterator[bytes], node_id: str, view: ReplicaView, metering: Metering
) -> AsyncIterator[bytes]:
    """The stream, event by event, counted in flight on its replica until it ends (or
    the client goes); what it used is recorded even when the client left early."""
    follower = StreamMeter(strip=metering.strip_usage)
    try:
        async for chunk in chunks:
            events = follower.feed(chunk)
            if events:
                yield events
        rest = follower.flush()
        if rest:
            yield rest
    finally:
        view.in_flight[node_id] -= 1
        metering.record(node_id, follower.usage, streamed=True)
