"""The simulator's request models and response bodies, shaped as vLLM's OpenAI server's."""

from __future__ import annotations

import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "ChatRequest",
    "CompletionRequest",
    "StreamOptions",
    "error_body",
    "generate",
    "prompt_tokens",
]

_WORDS = (
    "the",
    "spot",
    "node",
    "answered",
    "while",
    "the",
    "scheduler",
    "kept",
    "every",
    "replica",
    "warm",
    "and",
    "the",
    "gateway",
    "routed",
    "each",
    "request",
    "to",
    "the",
    "least",
    "loaded",
    "engine",
)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, gt=0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError("the simulator generates exactly one choice (n=1)")
        return value

    def completion_tokens(self) -> int:
        return self.max_tokens or 16

    def wants_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(_Request):
    messages: list[_Message] = Field(min_length=1)

    def text(self) -> str:
        parts = []
        for message in self.messages:
            if isinstance(message.content, str):
                parts.append(message.content)
            elif message.content:
                parts += [str(p.get("text", "")) for p in message.content]
        return " ".join(parts)


class CompletionRequest(_Request):
    prompt: str | list[str]

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else " ".join(self.prompt)


def prompt_tokens(text: str) -> int:
    return max(1, len(text.split()))


def generate(text: str, count: int) -> list[str]:
    """``count`` tokens (a word and a space each), the same for the same prompt."""
    start = sum(map(ord, text)) % len(_WORDS)
    return [_WORDS[(start + i) % len(_WORDS)] + " " for i in range(count)]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def error_body(status: int, message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}
