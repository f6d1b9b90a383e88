"""Handing an upstream answer to the client: retried elsewhere while none of it has been
sent, resumed elsewhere when a stream is cut, and metered once it is complete."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from cic_gateway.adapters.upstream import UpstreamResponse, UpstreamTimeout, UpstreamUnavailable
from cic_gateway.domain.errors import ApiError, error_body
from cic_gateway.domain.metering import DONE, StreamMeter, Usage, usage_of
from cic_gateway.domain.resumption import Splice, Transcript, continuation, resumable
from cic_gateway.entrypoints.dispatch import Dispatch, Metering

__all__ = ["Answer", "Forward", "forward"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Forward:
    """A request as it goes upstream."""

    body: bytes
    request: dict[str, Any]
    """The upstream body, parsed (what a resumption is built from)."""
    chat: bool
    metering: Metering


@dataclass(frozen=True)
class Answer:
    """What the client gets: a whole body, or a stream (whoever serves it, ASGI or the
    gateway's own HTTP lane: see ``serving``)."""

    status: int
    media_type: str
    headers: dict[str, str]
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None


async def forward(dispatch: Dispatch, forward: Forward) -> Answer:
    """The client's answer from the first replica that gives one."""
    upstream, node = await dispatch.send(forward.body)
    headers = {"x-request-id": forward.metering.request_id}
    while True:
        if upstream.content_type.startswith("text/event-stream"):
            return Answer(
                upstream.status, "text/event-stream",
                {**headers, "x-cic-replica": node, "cache-control": "no-cache"},
                stream=_stream(dispatch, forward, upstream, node),
            )  # fmt: skip
        try:
            content = await upstream.read()
        except UpstreamTimeout as exc:  # the request's own time is up: no other try
            dispatch.finished(node)
            raise ApiError(504, f"the answer took longer than allowed: {exc}") from exc
        except UpstreamUnavailable as exc:
            dispatch.failed(node, exc)  # nothing was sent yet: any other replica will do
            upstream, node = await dispatch.send(forward.body, retry=True)
            continue
        except BaseException:
            dispatch.finished(node)
            raise
        dispatch.finished(node)
        usage = usage_of(content) if upstream.status == 200 else None
        forward.metering.record(node, usage, streamed=False)
        media_type = upstream.content_type
        if upstream.status >= 400 and not media_type.startswith("application/json"):
            text = content[:1000].decode(errors="replace")  # not an engine's error: wrap it
            wrapped = error_body(upstream.status, f"the replica answered: {text}")
            content = json.dumps(wrapped).encode()
            media_type = "application/json"
        return Answer(upstream.status, media_type, {**headers, "x-cic-replica": node}, content)


async def _stream(
    dispatch: Dispatch, forward: Forward, upstream: UpstreamResponse, node: str
) -> AsyncIterator[bytes]:
    """The stream, event by event; if its replica dies before the end, the rest comes
    from another one. Its usage is recorded once it ends: the engine's count, or for a
    stream cut or left early, what it had used by the last event passed on."""
    transcript = Transcript() if resumable(forward.request, forward.chat) else None
    splice: Splice | None = None
    follower = StreamMeter(forward.metering.asked)
    holding = True  # ``node`` still counts this request in flight
    try:
        while True:
            try:
                async for chunk in upstream.chunks():
                    events = follower.feed(chunk)
                    if splice is not None:
                        events = splice.rewrite(events)
                    if events:
                        if transcript is not None:
                            transcript.add(events)
                        yield events
                rest = follower.flush()  # a last event the engine did not close
                if rest:
                    yield rest
                cut: UpstreamUnavailable | None = None
            except UpstreamUnavailable as exc:
                cut = exc
            holding = False
            if follower.done or isinstance(cut, UpstreamTimeout):
                dispatch.finished(node)  # the end, or the stream's time is up (not resumed)
                return
            dispatch.failed(node, cut or UpstreamUnavailable("the stream ended early"))
            sent = splice.usage(follower.usage) if splice else follower.usage
            resumed = await _resume(dispatch, forward, transcript, sent)
            if isinstance(resumed, bytes):
                yield resumed
            if not isinstance(resumed, tuple):
                return
            (upstream, node, splice), holding = resumed, True
            follower = StreamMeter(forward.metering.asked)
    finally:
        if holding:
            dispatch.finished(node)
        usage = splice.usage(follower.usage) if splice else follower.usage
        forward.metering.record(node, usage, streamed=True)


async def _resume(
    dispatch: Dispatch, forward: Forward, transcript: Transcript | None, sent: Usage | None
) -> tuple[UpstreamResponse, str, Splice] | bytes | None:
    """The rest of a cut stream from another replica; its last event when only that was
    missing; or None: the stream ends here, cut."""
    if transcript is None or not transcript.complete:
        log.warning("a stream was cut and cannot be resumed",
                    extra={"request_id": forward.metering.request_id})  # fmt: skip
        return None
    progress = transcript.read()
    if progress.finished:
        return DONE
    if sent is not None:  # the engine's count of the tokens sent, rather than the events'
        progress = replace(progress, tokens=sent.completion_tokens)
    body = continuation(forward.request, forward.chat, progress)
    if body is None:
        return DONE
    try:
        upstream, node = await dispatch.send(body, retry=True)
    except ApiError as exc:
        reason = {"request_id": forward.metering.request_id, "reason": exc.message}
        log.warning("a cut stream found no replica to resume it", extra=reason)
        return None
    if upstream.status != 200 or not upstream.content_type.startswith("text/event-stream"):
        try:
            refusal = await upstream.read()
        except UpstreamUnavailable as exc:
            refusal = str(exc).encode()
        finally:
            dispatch.finished(node)
        answer = refusal[:500].decode(errors="replace")
        log.warning("a replica refused to resume a stream", extra={"node": node, "answer": answer})
        return None
    log.info("resuming a cut stream", extra={"node": node, "tokens_sent": progress.tokens})
    return upstream, node, Splice(progress, sent)
