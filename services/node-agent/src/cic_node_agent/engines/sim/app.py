"""The simulator's HTTP server: OpenAI chat and text completions, health, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from cic_node_agent.engines.sim.protocol import (
    DEFAULT_MAX_TOKENS,
    ChatRequest,
    CompletionRequest,
    describe,
    error_body,
    generate,
    new_id,
    now,
    sse,
    word_count,
)

__all__ = ["MAX_NUM_SEQS", "SimConfig", "create_app"]

MAX_NUM_SEQS = 64
"""Requests generated at once, as vLLM's ``--max-num-seqs``; the rest wait."""


@dataclass(frozen=True)
class SimConfig:
    model: str
    token_delay: float = 0.0
    max_model_len: int = 4096


@dataclass
class _Load:
    """What ``/metrics`` reports: requests in flight and the counters since start."""

    waiting: int = 0
    running: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    succeeded: int = 0
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_NUM_SEQS))

    @asynccontextmanager
    async def request(self, prompt: int) -> AsyncIterator[None]:
        """Counts a request as waiting, then running, however it ends; success if it ends well."""
        self.waiting += 1
        try:
            await self.slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        self.prompt_tokens += prompt
        try:
            yield
        finally:
            self.running -= 1
            self.slots.release()
        self.succeeded += 1

    def exposition(self, model: str) -> str:
        label = f'model_name="{model}"'
        rows = [
            ("vllm:num_requests_running", "gauge",
             "Number of requests in model execution batches.", label, self.running),
            ("vllm:num_requests_waiting", "gauge",
             "Number of requests waiting to be processed.", label, self.waiting),
            ("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.",
             label, min(1.0, self.running / MAX_NUM_SEQS)),
            ("vllm:prompt_tokens_total", "counter",
             "Number of prefill tokens processed.", label, self.prompt_tokens),
            ("vllm:generation_tokens_total", "counter",
             "Number of generation tokens processed.", label, self.generation_tokens),
            ("vllm:request_success_total", "counter", "Count of successfully processed requests.",
             f'finished_reason="length",{label}', self.succeeded),
        ]  # fmt: skip
        lines = []
        for name, kind, text, labels, value in rows:
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            lines.append(f"{name}{{{labels}}} {float(value)!r}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class _Reply:
    """One answer's tokens and how to wrap them as a chat or a text completion."""

    chat: bool
    head: dict[str, Any]
    tokens: list[str]
    prompt: int

    def usage(self) -> dict[str, int]:
        generated = len(self.tokens)
        return {
            "prompt_tokens": self.prompt,
            "completion_tokens": generated,
            "total_tokens": self.prompt + generated,
        }

    def whole(self) -> dict[str, Any]:
        text = "".join(self.tokens)
        choice: dict[str, Any] = {"index": 0}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        choice.update(logprobs=None, finish_reason="length")
        kind = "chat.completion" if self.chat else "text_completion"
        return {**self.head, "object": kind, "choices": [choice], "usage": self.usage()}

    def chunk(
        self, content: str | None, finish: str | None = None, role: bool = False
    ) -> dict[str, Any]:
        """A token's chunk; ``None`` content is the closing chunk (an empty delta)."""
        choice: dict[str, Any] = {"index": 0}
        if self.chat:
            choice["delta"] = {} if content is None else {"content": content}
            if role:
                choice["delta"] = {"role": "assistant", **choice["delta"]}
        else:
            choice["text"] = content or ""
        choice.update(logprobs=None, finish_reason=finish)
        return {**self.head, "object": self.kind, "choices": [choice]}

    @property
    def kind(self) -> str:
        return "chat.completion.chunk" if self.chat else "text_completion"


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


async def _events(
    load: _Load, reply: _Reply, token_delay: float, include_usage: bool
) -> AsyncGenerator[bytes, None]:
    extra: dict[str, Any] = {"usage": None} if include_usage else {}
    async with load.request(reply.prompt):
        if reply.chat:
            yield sse({**reply.chunk("", role=True), **extra})
        for token in reply.tokens:
            if token_delay:
                await asyncio.sleep(token_delay)
            load.generation_tokens += 1
            yield sse({**reply.chunk(token), **extra})
        yield sse({**reply.chunk(None, finish="length"), **extra})
        if include_usage:
            yield sse({**reply.head, "object": reply.kind, "choices": [], "usage": reply.usage()})
        yield sse("[DONE]")


def _error(status: int, message: str) -> JSONResponse:
    kind = "NotFoundError" if status == 404 else "BadRequestError"
    return JSONResponse(error_body(status, message, kind), status_code=status)


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


def create_app(config: SimConfig) -> FastAPI:
    app = FastAPI(title="cic-sim", docs_url=None, redoc_url=None, openapi_url=None)
    load = _Load()

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {
            "id": config.model,
            "object": "model",
            "created": now(),
            "owned_by": "vllm",
            "root": config.model,
            "parent": None,
            "max_model_len": config.max_model_len,
        }
        return {"object": "list", "data": [card]}

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        text = load.exposition(config.model)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    async def serve(request: Request, chat: bool) -> Response:
        body: ChatRequest | CompletionRequest
        try:
            raw = await request.json()
            if chat:
                body = ChatRequest.model_validate(raw)
            else:
                body = CompletionRequest.model_validate(raw)
        except ValidationError as exc:
            return _error(400, describe(exc))
        except ValueError as exc:
            return _error(400, f"The body is not valid JSON: {exc}")
        if body.model != config.model:
            return _error(404, f"The model `{body.model}` does not exist.")
        prompt = word_count(body.prompt_text())
        count = _budget(prompt, body.requested_tokens(), config.max_model_len)
        if isinstance(count, str):
            return _error(400, count)
        head = {"id": new_id("chatcmpl" if chat else "cmpl"), "created": now(), "model": body.model}
        reply = _Reply(chat, head, generate(body.seed_text(), count), prompt)
        if body.stream:
            return _ClosingStream(_events(load, reply, config.token_delay, body.wants_usage()))
        async with load.request(prompt):
            if config.token_delay:
                await asyncio.sleep(config.token_delay * count)
            load.generation_tokens += count
        return JSONResponse(reply.whole())

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await serve(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await serve(request, chat=False)

    return app
