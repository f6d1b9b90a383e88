"""The simulator's HTTP server: OpenAI completions and embeddings, health, metrics, faults."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from cic_node_agent.engines.sim.engine import SimEngine
from cic_node_agent.engines.sim.faults import ADMIN_PATH, FaultGate, Faults, FaultSwitch
from cic_node_agent.engines.sim.latency import MAX_NUM_SEQS, LatencyModel
from cic_node_agent.engines.sim.metrics import Load
from cic_node_agent.engines.sim.protocol import (
    DEFAULT_MAX_TOKENS,
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    describe,
    now,
    word_count,
)
from cic_node_agent.engines.sim.replies import Reply, embedding_body, error_for
from cic_node_agent.engines.sim.text import apply_stop, embed, encode_vector, generate, key_for

__all__ = ["MAX_NUM_SEQS", "SimConfig", "create_app"]


@dataclass(frozen=True)
class SimConfig:
    """The simulator's settings; the defaults answer at once and never fail.

    ``token_delay`` is the inter-token latency (seconds between two tokens of a request);
    ``ttft_overhead + prefill_per_token * prompt tokens`` is the time to the first one.
    See :class:`LatencyModel` and :class:`Faults` for the rest.
    """

    model: str
    token_delay: float = 0.0
    max_model_len: int = 4096
    ttft_overhead: float = 0.0
    prefill_per_token: float = 0.0
    max_num_seqs: int = MAX_NUM_SEQS
    time_factor_under_load: float = 1.0
    seed: int = 0
    embedding_dim: int = 64
    faults: Faults = field(default_factory=Faults)

    def latency(self) -> LatencyModel:
        return LatencyModel(
            ttft_overhead=self.ttft_overhead,
            prefill_per_token=self.prefill_per_token,
            inter_token_latency=self.token_delay,
            max_num_seqs=self.max_num_seqs,
            time_factor_under_load=self.time_factor_under_load,
        )


class _ClosingStream(StreamingResponse):
    """Closes its generator however the response ends, so an abandoned stream is counted out.

    Starlette leaves a generator suspended when the client goes away mid-stream; it would
    only be finalised when garbage-collected.
    """

    def __init__(self, events: AsyncGenerator[bytes, None]) -> None:
        super().__init__(events, media_type="text/event-stream")
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._events.aclose()


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(error_for(status, message), status_code=status)


def _budget(prompt: int, requested: int | None, max_model_len: int) -> int | str:
    """How many tokens to generate, or why the request does not fit the context (vLLM's words)."""
    if prompt >= max_model_len:
        return (
            f"This model's maximum context length is {max_model_len} tokens. However, your"
            f" request has {prompt} input tokens. Please reduce the length of the input messages."
        )
    if requested is None:
        return min(DEFAULT_MAX_TOKENS, max_model_len - prompt)
    if prompt + requested > max_model_len:
        return (
            f"'max_tokens' or 'max_completion_tokens' is too large: {requested}. This model's"
            f" maximum context length is {max_model_len} tokens and your request has {prompt}"
            f" input tokens ({requested} > {max_model_len} - {prompt})."
        )
    return requested


_INJECTED = "Simulated failure: the simulator's error_rate fault is set."


def create_app(config: SimConfig) -> Starlette:
    """The simulator as an ASGI app (plain Starlette: FastAPI's per-request cost halves the
    rate one process serves; see ``bench/sim_throughput.py``)."""
    switch = FaultSwitch(config.faults)
    load = Load(config.model, config.max_num_seqs, config.max_model_len)
    engine = SimEngine(config.latency(), load, switch)

    async def health(request: Request) -> Response:
        return Response(status_code=200)

    async def models(request: Request) -> Response:
        card = {
            "id": config.model,
            "object": "model",
            "created": now(),
            "owned_by": "vllm",
            "root": config.model,
            "parent": None,
            "max_model_len": config.max_model_len,
        }
        return JSONResponse({"object": "list", "data": [card]})

    async def metrics(request: Request) -> Response:
        return PlainTextResponse(load.exposition(), media_type="text/plain; version=0.0.4")

    async def serve(request: Request, chat: bool) -> Response:
        arrival = time.perf_counter()
        if switch.fail_next():
            return _error(500, _INJECTED)
        body: ChatRequest | CompletionRequest
        raw = await request.body()
        try:
            if chat:
                body = ChatRequest.model_validate_json(raw)
            else:
                body = CompletionRequest.model_validate_json(raw)
        except ValidationError as exc:
            return _error(400, describe(exc))
        if body.model != config.model:
            return _error(404, f"The model `{body.model}` does not exist.")
        prompt = word_count(body.prompt_text())
        count = _budget(prompt, body.requested_tokens(), config.max_model_len)
        if isinstance(count, str):
            return _error(400, count)
        key, context, stops = key_for(config.seed, body.seed), body.context(), body.stops()
        answers = [
            apply_stop(generate(key, context, count, i, leading_space=not chat), stops)
            for i in range(body.choices())
        ]
        reply = Reply.new(chat, body.model, answers, prompt)
        if body.stream:
            return _ClosingStream(
                engine.stream(reply, arrival, body.wants_usage(), body.wants_running_usage())
            )
        await engine.complete(reply, arrival)
        return JSONResponse(reply.whole())

    async def chat_completions(request: Request) -> Response:
        return await serve(request, chat=True)

    async def completions(request: Request) -> Response:
        return await serve(request, chat=False)

    async def embeddings(request: Request) -> Response:
        arrival = time.perf_counter()
        if switch.fail_next():
            return _error(500, _INJECTED)
        try:
            body = EmbeddingRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            return _error(400, describe(exc))
        if body.model != config.model:
            return _error(404, f"The model `{body.model}` does not exist.")
        dimensions = body.dimensions or config.embedding_dim
        if dimensions > config.embedding_dim:
            return _error(400, f"dimensions: at most {config.embedding_dim} for this model.")
        texts = body.texts()
        counts = [word_count(text) for text in texts]
        if max(counts) > config.max_model_len:
            return _error(400, (
                f"This model's maximum context length is {config.max_model_len} tokens. However,"
                f" you requested {max(counts)} tokens in the input for embedding generation."
                " Please reduce the length of the input."
            ))  # fmt: skip
        prompt = sum(counts)
        await engine.embed(prompt, arrival)
        encoding = body.encoding_format or "float"
        vectors = [encode_vector(embed(t, dimensions, config.seed), encoding) for t in texts]
        return JSONResponse(embedding_body(body.model, vectors, prompt))

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route(ADMIN_PATH, switch.endpoint, methods=["GET", "POST"]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(FaultGate, switch=switch)])
