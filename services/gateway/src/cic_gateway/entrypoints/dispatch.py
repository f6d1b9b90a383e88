"""One client request's tries at the replicas of its model: the first one, the retries
while nothing has reached the client, and the resumptions of a cut stream."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cic_common.events import RequestUsage

from cic_gateway.adapters.replica_view import ReplicaView
from cic_gateway.adapters.upstream import UpstreamResponse, UpstreamTimeout, UpstreamUnavailable
from cic_gateway.adapters.usage import UsageMeter
from cic_gateway.domain.errors import ApiError
from cic_gateway.domain.metering import Asked, Usage
from cic_gateway.domain.retry_budget import RetryBudget
from cic_gateway.domain.routing import choose_replica

__all__ = ["Dispatch", "Metering"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Metering:
    """Who asked for what, and where its usage goes."""

    request_id: str
    key_id: str
    model: str
    meter: UsageMeter
    asked: Asked
    """The usage the client asked for in its stream (the engine is asked for all of it)."""
    settle: Callable[[int], None] | None = None
    """Given the tokens the request used, settles what its key's token limit reserved."""

    def refund(self) -> None:
        """Nothing ran: the tokens reserved for the request go back to its key."""
        if self.settle is not None:
            self.settle(0)

    def record(self, node_id: str, usage: Usage | None, streamed: bool) -> None:
        """What the request used; unknown (a stream cut or left early), the tokens
        reserved for it stay counted against its key's limit."""
        if usage is not None and self.settle is not None:
            self.settle(usage.prompt_tokens + usage.completion_tokens)
        if usage is not None:
            self.meter.record(RequestUsage(
                request_id=self.request_id, key_id=self.key_id, model=self.model,
                node_id=node_id, prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens, streamed=streamed,
            ))  # fmt: skip


@dataclass
class Dispatch:
    """Sends a request to a replica chosen by the gateway's policy, trying others (within
    the retry budget) while one fails before answering, and keeps the request counted in
    flight on the replica that has it."""

    state: Any
    """The app's state: settings, replicas, upstream, policy, retry budget."""
    model: str
    path: str
    affinity: str | None = None
    tried: set[str] = field(default_factory=set)
    last: UpstreamUnavailable | None = None

    async def send(self, body: bytes, *, retry: bool = False) -> tuple[UpstreamResponse, str]:
        """The first replica to take ``body``, and its node id.

        Raises:
            ApiError: 503 when no replica took it (504 when the last one timed out).
        """
        state = self.state
        view: ReplicaView = state.replicas
        budget: RetryBudget = state.retry_budget
        if not retry:
            budget.requested(time.monotonic())
        for attempt in range(state.settings.max_attempts):
            if (attempt or retry) and not budget.may_retry(time.monotonic()):
                break
            replica = choose_replica(
                view.replicas(self.model), self.tried, state.policy, view.in_flight, self.affinity
            )
            if replica is None:
                break
            self.tried.add(replica.node_id)
            view.in_flight[replica.node_id] += 1
            try:
                upstream = await state.upstream.post(
                    replica.node_id, replica.endpoint, self.path, body
                )
            except UpstreamTimeout as exc:  # the request's own time: not the replica's fault
                self.finished(replica.node_id)
                self.last = exc
                break
            except UpstreamUnavailable as exc:
                self.failed(replica.node_id, exc)
                continue
            except BaseException:
                self.finished(replica.node_id)
                raise
            return upstream, replica.node_id
        raise self._failure()

    def finished(self, node_id: str) -> None:
        self.state.replicas.in_flight[node_id] -= 1

    def failed(self, node_id: str, exc: UpstreamUnavailable) -> None:
        """``node_id`` failed this request: no more of this instance's requests for a
        while, and health is told."""
        self.finished(node_id)
        self.state.replicas.eject(node_id)
        self.state.suspicions.report(node_id, str(exc))
        self.last = exc
        log.warning("replica failed; trying another",
                    extra={"node": node_id, "reason": str(exc)})  # fmt: skip

    def _failure(self) -> ApiError:
        model, last = self.model, self.last
        if isinstance(last, UpstreamTimeout):
            return ApiError(504, f"no replica of {model!r} answered in time: {last}")
        reason = str(last) if last else "no routable replica"
        return ApiError(503, f"no replica of {model!r} answered: {reason}", retry_after=2)
