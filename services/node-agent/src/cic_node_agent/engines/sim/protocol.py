"""The simulator's request models and wire helpers, shaped as vLLM's OpenAI server's."""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "MAX_CHOICES",
    "ChatRequest",
    "CompletionRequest",
    "EmbeddingRequest",
    "StreamOptions",
    "describe",
    "error_body",
    "new_id",
    "now",
    "sse",
    "word_count",
]

DEFAULT_MAX_TOKENS = 16
MAX_CHOICES = 128
"""The most choices (``n``) one request may ask for, as OpenAI's API allows."""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool | None = False
    continuous_usage_stats: bool | None = False


class _Request(BaseModel):
    """What chat and text completions share; unknown fields (temperature...) are ignored."""

    model_config = ConfigDict(extra="allow")
    model: str
    max_tokens: int | None = Field(None, gt=0)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(1, ge=1, le=MAX_CHOICES)
    stop: str | list[str] | None = None
    seed: int | None = None

    @model_validator(mode="after")
    def _options_need_a_stream(self) -> _Request:
        if self.stream_options is not None and not self.stream:
            raise ValueError("Stream options can only be defined when `stream=True`.")
        return self

    def requested_tokens(self) -> int | None:
        return self.max_tokens

    def wants_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def wants_running_usage(self) -> bool:
        """Usage in every chunk (vLLM's ``continuous_usage_stats``, with ``include_usage``)."""
        options = self.stream_options
        return bool(options and options.include_usage and options.continuous_usage_stats)

    def choices(self) -> int:
        return self.n or 1

    def stops(self) -> list[str]:
        """The stop strings, empty ones dropped."""
        stops = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return [stop for stop in stops if stop]


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return " ".join(str(part.get("text", "")) for part in self.content or [])


class ChatRequest(_Request):
    messages: list[_Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, gt=0)
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    """Go on with the last (assistant) message instead of starting a new one."""

    @model_validator(mode="after")
    def _continue_or_prompt(self) -> ChatRequest:
        if self.continue_final_message and self.add_generation_prompt:
            raise ValueError(
                "Cannot set both `continue_final_message` and `add_generation_prompt` to True."
            )
        return self

    def requested_tokens(self) -> int | None:
        """vLLM prefers the newer ``max_completion_tokens`` to ``max_tokens``."""
        return self.max_completion_tokens or self.max_tokens

    def prompt_text(self) -> str:
        return " ".join(message.text() for message in self.messages)

    def context(self) -> str:
        """The text the answer continues, as a chat template lays it out: one message a
        line, then a line for the answer (or, continuing the last message, none)."""
        text = "\n".join(message.text() for message in self.messages)
        return text + "\n" if self.add_generation_prompt else text


class CompletionRequest(_Request):
    prompt: str | Annotated[list[str], Field(min_length=1)]

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def context(self) -> str:
        """The text the answer continues."""
        return self.prompt_text()


class EmbeddingRequest(BaseModel):
    """``/v1/embeddings``: one text or a list of them; token-id inputs are not simulated."""

    model_config = ConfigDict(extra="allow")
    model: str
    input: str | Annotated[list[str], Field(min_length=1)]
    encoding_format: Literal["float", "base64"] | None = "float"
    dimensions: int | None = Field(None, gt=0)

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else self.input


def word_count(text: str) -> int:
    return len(text.split())


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def describe(exc: ValidationError) -> str:
    """One line per problem, ``where: what``, as a client can show it."""
    return "; ".join(
        f"{'.'.join(map(str, error['loc'])) or 'body'}: {error['msg']}" for error in exc.errors()
    )


def error_body(status: int, message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event; a string (``[DONE]``) is sent as is."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()
