"""Resuming a stream that its replica cut short, so that the client sees one stream.

While a one-choice stream passes, the events sent to the client are kept as they went
(nothing is parsed on the way). When the replica dies, they are read back: the text
so far becomes the prompt's continuation — appended to a completion's prompt, or a chat's
assistant message continued (vLLM's ``continue_final_message``) — and ``max_tokens`` is
reduced by the tokens already sent. The next replica's events are then made to look like
the first one's: the same ``id`` and ``created``, no second chat role chunk, and a usage
that counts the resumed text as completion, not prompt.

Token counts are the engine's running usage (the gateway asks for it in every chunk):
the tokens generated before the cut, and the first request's prompt tokens; the whole
stream's usage is that prompt and those tokens plus the continuation's. From an engine
that gives no running usage, they are counted from the events (one per generated token,
as vLLM streams them), and the prompt is the continuation's less the tokens sent.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from cic_gateway.domain.metering import DONE, Usage

__all__ = ["Progress", "Splice", "Transcript", "continuation", "resumable"]

_CREATED = re.compile(rb'"created":\s*\d+')


_NOT_CONTINUABLE = ("tools", "functions", "response_format", "guided_json", "guided_regex",
                    "guided_choice", "guided_grammar", "structured_outputs")  # fmt: skip


def resumable(request: dict[str, Any], chat: bool) -> bool:
    """Whether a cut stream of ``request`` can be resumed: one choice, no echoed prompt,
    no tools or constrained output, and a prompt the text so far can be appended to."""
    if request.get("stream") is not True or request.get("n", 1) not in (1, None):
        return False
    if request.get("echo") or request.get("best_of", 1) not in (1, None):
        return False
    if any(request.get(name) for name in _NOT_CONTINUABLE):
        return False  # tool calls and constrained output cannot be taken up half-way
    if not chat:
        return isinstance(request.get("prompt"), str)
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return False
    if request.get("continue_final_message") is True:
        return isinstance(messages[-1].get("content"), str)
    return True


@dataclass(frozen=True)
class Progress:
    """What the client has had so far."""

    id: str | None
    created: int | None
    text: str
    tokens: int
    finished: bool
    """A closing chunk (a ``finish_reason``) was sent: nothing is left to generate."""


@dataclass
class Transcript:
    """The events sent to the client, as sent, up to ``limit`` bytes (then: no resuming)."""

    limit: int = 8 * 1024 * 1024
    _events: list[bytes] = field(default_factory=list)
    _size: int = 0

    def add(self, events: bytes) -> None:
        self._size += len(events)
        if self._size <= self.limit:
            self._events.append(events)

    @property
    def complete(self) -> bool:
        return self._size <= self.limit

    def read(self) -> Progress:
        ident: str | None = None
        created: int | None = None
        text, tokens, finished = [], 0, False
        for event in b"".join(self._events).split(b"\n\n"):
            chunk = _parse(event)
            if chunk is None:
                continue
            ident = ident or chunk.get("id")
            created = created or chunk.get("created")
            for choice in chunk.get("choices") or ():
                piece = _piece(choice)
                if piece:
                    text.append(piece)
                    tokens += 1
                finished = finished or choice.get("finish_reason") is not None
        return Progress(ident, created, "".join(text), tokens, finished)


def continuation(request: dict[str, Any], chat: bool, progress: Progress) -> bytes | None:
    """The request for the rest of the answer, or None when nothing is left to ask."""
    body = dict(request)
    if isinstance(body.get("min_tokens"), int):
        body["min_tokens"] = max(0, body["min_tokens"] - progress.tokens)
    for field_name in ("max_tokens", "max_completion_tokens"):
        limit = body.get(field_name)
        if isinstance(limit, int):
            if limit - progress.tokens <= 0:
                return None
            body[field_name] = limit - progress.tokens
    if not chat:
        body["prompt"] = body["prompt"] + progress.text
        return json.dumps(body).encode()
    messages = list(body["messages"])
    if body.get("continue_final_message") is True:
        last = messages[-1]
        messages[-1] = {**last, "content": last["content"] + progress.text}
    else:
        messages.append({"role": "assistant", "content": progress.text})
    body.update(messages=messages, continue_final_message=True, add_generation_prompt=False)
    return json.dumps(body).encode()


class Splice:
    """Rewrites a continuation's events as the rest of the first stream."""

    def __init__(self, progress: Progress, before: Usage | None = None) -> None:
        self._progress = progress
        self._before = before
        """What the stream had used when it was cut (the engine's running usage)."""
        self._ident: bytes | None = None

    def usage(self, usage: Usage | None) -> Usage | None:
        """The whole stream's usage, from the continuation's."""
        before = self._before
        if before is not None:
            more = usage.completion_tokens if usage is not None else 0
            return Usage(before.prompt_tokens, before.completion_tokens + more)
        if usage is None:
            return None
        sent = self._progress.tokens
        return Usage(max(0, usage.prompt_tokens - sent), usage.completion_tokens + sent)

    def rewrite(self, events: bytes) -> bytes:
        return b"".join(self._event(e + b"\n\n") for e in events.split(b"\n\n")[:-1])

    def _event(self, event: bytes) -> bytes:
        if event == DONE:
            return event
        if self._ident is None or b'"delta":{"role"' in event or b'"usage":{' in event:
            chunk = _parse(event)
            if chunk is None:
                return event
            if self._ident is None and isinstance(chunk.get("id"), str):
                self._ident = chunk["id"].encode()
            choices = chunk.get("choices") or ()
            if any("role" in (c.get("delta") or {}) and not _piece(c) for c in choices):
                return b""  # the continuation's own role chunk: the client had one
            usage = chunk.get("usage")
            if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
                whole = self.usage(Usage(usage["prompt_tokens"],
                                         usage.get("completion_tokens", 0)))  # fmt: skip
                assert whole is not None
                prompt, completion = whole.prompt_tokens, whole.completion_tokens
                usage.update(prompt_tokens=prompt, completion_tokens=completion,
                             total_tokens=prompt + completion)  # fmt: skip
                event = b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
        progress = self._progress
        if self._ident and progress.id:
            event = event.replace(self._ident, progress.id.encode())
        if progress.created is not None:
            event = _CREATED.sub(b'"created":%d' % progress.created, event, count=1)
        return event


def _parse(event: bytes) -> dict[str, Any] | None:
    data = event.strip()
    if not data.startswith(b"data:"):
        return None
    try:
        chunk = json.loads(data[5:])
    except ValueError:
        return None
    return chunk if isinstance(chunk, dict) else None


def _piece(choice: dict[str, Any]) -> str:
    """The text a stream choice adds: a completion's ``text`` or a chat delta's content."""
    delta = choice.get("delta")
    piece = delta.get("content") if isinstance(delta, dict) else choice.get("text")
    return piece if isinstance(piece, str) else ""
