"""The simulator's HTTP server: OpenAI chat and text completions, health, metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import ValidationError

from cic_node_agent.engines.sim.protocol import (
    ChatRequest,
    CompletionRequest,
    error_body,
    generate,
    new_id,
    now,
    prompt_tokens,
)

__all__ = ["SimConfig", "create_app"]

MAX_NUM_SEQS = 64


@dataclass(frozen=True)
class SimConfig:
    model: str
    token_delay: float = 0.0
    max_model_len: int = 4096


@dataclass
class _Counters:
    running: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    succeeded: int = 0


def create_app(config: SimConfig) -> FastAPI:
    app = FastAPI(title="cic-sim", docs_url=None, redoc_url=None, openapi_url=None)
    counters = _Counters()

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
        label = f'{{model_name="{config.model}"}}'
        kv = min(1.0, counters.running / MAX_NUM_SEQS)
        rows = [
            ("vllm:num_requests_running", "gauge", "Requests in the batch.", counters.running),
            ("vllm:num_requests_waiting", "gauge", "Requests queued.", 0),
            ("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage, 1 is full.", kv),
            ("vllm:prompt_tokens_total", "counter", "Prompt tokens.", counters.prompt_tokens),
            ("vllm:generation_tokens_total", "counter", "Generated tokens.",
             counters.generation_tokens),
            ("vllm:request_success_total", "counter", "Finished requests.", counters.succeeded),
        ]  # fmt: skip
        lines = []
        for name, kind, text, value in rows:
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name}{label} {value}"]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    async def serve(request: Request, chat: bool) -> Response:
        try:
            raw = await request.json()
            body = (ChatRequest if chat else CompletionRequest).model_validate(raw)
        except (ValueError, ValidationError) as exc:
            return JSONResponse(error_body(400, str(exc), "BadRequestError"), status_code=400)
        if body.model != config.model:
            message = f"The model `{body.model}` does not exist."
            return JSONResponse(error_body(404, message, "NotFoundError"), status_code=404)
        prompt = prompt_tokens(body.text())
        tokens = generate(body.text(), body.completion_tokens())
        kind = "chat.completion" if chat else "text_completion"
        rid = new_id("chatcmpl" if chat else "cmpl")
        usage = {"prompt_tokens": prompt, "completion_tokens": len(tokens),
                 "total_tokens": prompt + len(tokens)}  # fmt: skip
        head = {"id": rid, "created": now(), "model": config.model}
        if not body.stream:
            async with _running(counters, prompt, len(tokens)):
                if config.token_delay:
                    await asyncio.sleep(config.token_delay * len(tokens))
            text = "".join(tokens)
            choice: dict[str, Any] = {"index": 0, "finish_reason": "length", "logprobs": None}
            choice.update({"message": {"role": "assistant", "content": text}} if chat
                          else {"text": text})  # fmt: skip
            return JSONResponse({**head, "object": kind, "choices": [choice], "usage": usage})
        stream = _stream(counters, config, head, kind, chat, tokens, prompt, usage,
                         body.wants_usage())  # fmt: skip
        return StreamingResponse(stream, media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await serve(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await serve(request, chat=False)

    return app


class _running:
    """Counts a request as running for its whole life, however it ends."""

    def __init__(self, counters: _Counters, prompt: int, generated: int) -> None:
        self._c, self._prompt, self._generated = counters, prompt, generated

    async def __aenter__(self) -> None:
        self._c.running += 1
        self._c.prompt_tokens += self._prompt

    async def __aexit__(self, kind: object, *_: object) -> None:
        self._c.running -= 1
        if kind is None:
            self._c.generation_tokens += self._generated
            self._c.succeeded += 1


async def _stream(
    counters: _Counters,
    config: SimConfig,
    head: dict[str, Any],
    kind: str,
    chat: bool,
    tokens: list[str],
    prompt: int,
    usage: dict[str, int],
    include_usage: bool,
) -> AsyncIterator[bytes]:
    kind = f"{kind}.chunk" if chat else kind
    extra = {"usage": None} if include_usage else {}

    def event(choice: dict[str, Any]) -> bytes:
        chunk = {**head, "object": kind, "choices": [{"index": 0, "logprobs": None, **choice}]}
        return f"data: {json.dumps({**chunk, **extra})}\n\n".encode()

    async with _running(counters, prompt, len(tokens)):
        if chat:
            yield event({"delta": {"role": "assistant", "content": ""}, "finish_reason": None})
        for token in tokens:
            if config.token_delay:
                await asyncio.sleep(config.token_delay)
            piece = {"delta": {"content": token}} if chat else {"text": token}
            yield event({**piece, "finish_reason": None})
        yield event({"delta": {}, "finish_reason": "length"} if chat
                    else {"text": "", "finish_reason": "length"})  # fmt: skip
        if include_usage:
            tail = {**head, "object": kind, "choices": [], "usage": usage}
            yield f"data: {json.dumps(tail)}\n\n".encode()
        yield b"data: [DONE]\n\n"
