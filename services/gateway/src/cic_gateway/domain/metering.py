"""What a request used, read from the engine's answer as it passes through.

Streamed answers carry their usage only when asked (``stream_options``): the gateway
always asks for it in every chunk (``include_usage`` and vLLM's
``continuous_usage_stats``), so that a stream cut short or left by its client early is
metered for what it had, and hands the stream on as the client asked for it — without
the running usage, or without any (no usage chunk, no ``"usage": null`` in every chunk).
An unescaped ``"usage"`` key cannot occur inside a JSON string, so cutting those bytes
never touches generated text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "DONE", "Asked", "StreamMeter", "Usage", "reserved_tokens", "usage_asked", "usage_of",
    "with_usage_requested",
]  # fmt: skip

DONE = b"data: [DONE]\n\n"
"""A stream's last event."""

_NULL_USAGE = (b',"usage":null', b', "usage": null', b'"usage":null,', b'"usage": null, ')
_USAGE = re.compile(rb'(, ?)?"usage": ?(\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\})')
"""A usage object (its counts may hold one level of details), with the comma before it."""
_USAGE_KEY = b'"usage":'
_NO_CHOICES = (b'"choices":[]', b'"choices": []')

Asked = Literal["none", "final", "running"]
"""The usage a streaming client asked for: none, the last chunk's (``include_usage``), or
every chunk's as well (``continuous_usage_stats``)."""


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


def usage_of(body: bytes) -> Usage | None:
    """The usage of a whole (not streamed) answer, when it has one (read from its usage
    object alone: the answer's text is never parsed for it)."""
    found = _find_usage(body)
    if found is None:
        return None
    try:
        return _usage(json.loads(found.group(2)))
    except ValueError:
        return None


def usage_asked(request: dict[str, Any]) -> Asked:
    options = request.get("stream_options")
    if not isinstance(options, dict) or options.get("include_usage") is not True:
        return "none"
    return "running" if options.get("continuous_usage_stats") is True else "final"


def with_usage_requested(request: dict[str, Any]) -> dict[str, Any] | None:
    """For a streamed request whose client did not ask for its usage in every chunk: the
    request to send upstream instead, asking for it. None: send the client's as it is."""
    if request.get("stream") is not True or usage_asked(request) == "running":
        return None
    options = request.get("stream_options")
    asked = {**(options if isinstance(options, dict) else {}), "include_usage": True,
             "continuous_usage_stats": True}  # fmt: skip
    return {**request, "stream_options": asked}


def reserved_tokens(request: dict[str, Any], size: int, unbounded: int) -> int:
    """The tokens to reserve for ``request`` (of ``size`` bytes) against a token limit
    until its usage is known: its prompt at one token for every four bytes of the body,
    and all it may generate (``unbounded`` for each choice when it sets no limit)."""
    limit = request.get("max_completion_tokens") or request.get("max_tokens")
    per_choice = limit if isinstance(limit, int) and limit > 0 else unbounded
    choices = request.get("n")
    return size // 4 + per_choice * (choices if isinstance(choices, int) and choices > 0 else 1)


class StreamMeter:
    """Follows a server-sent event stream, event by event, keeping its usage (the final
    one, or else the last running one), and removes what the client did not ask for."""

    def __init__(self, asked: Asked = "running") -> None:
        self._asked = asked
        self._pending = b""
        self._final: Usage | None = None
        self._running = b""
        self.done = False
        """The stream's last event has come."""

    @property
    def usage(self) -> Usage | None:
        """The stream's usage: its final count, or what it had used by the last event
        passed on (a stream cut or left early); None if the engine gave neither."""
        if self._final is not None or not self._running:
            return self._final
        try:
            return _usage(json.loads(self._running))
        except ValueError:
            return None

    def feed(self, data: bytes) -> bytes:
        """The complete events of what has arrived so far, to pass on."""
        self._pending += data
        cut = self._pending.rfind(b"\n\n")
        if cut < 0:
            return b""
        events, self._pending = self._pending[: cut + 2], self._pending[cut + 2 :]
        self.done = events.endswith(DONE)
        return b"".join(self._event(e + b"\n\n") for e in events.split(b"\n\n")[:-1])

    def flush(self) -> bytes:
        """What is left when the stream ends (an unfinished event, as it came)."""
        rest, self._pending = self._pending, b""
        return rest

    def _event(self, event: bytes) -> bytes:
        found = _find_usage(event)
        if found is None:
            if self._asked == "none":
                for added in _NULL_USAGE:
                    event = event.replace(added, b"")
            return event
        if any(marker in event for marker in _NO_CHOICES):  # the last chunk: only the usage
            try:
                self._final = _usage(json.loads(found.group(2)))
            except ValueError:
                return event
            return b"" if self._asked == "none" and self._final is not None else event
        self._running = found.group(2)  # read only if the stream ends without a final one
        if self._asked == "running":
            return event
        start, end = found.span()
        if found.group(1) is None and event[end : end + 1] == b",":
            end += 1  # the first key: the comma after it goes instead
        return event[:start] + event[end:]


def _find_usage(data: bytes) -> re.Match[bytes] | None:
    """The first usage object in ``data``, looked for only where its key is (a regex
    search alone tries every byte of the answer, and was most of metering's cost)."""
    at = data.find(_USAGE_KEY)
    while at >= 0:
        for start in range(max(0, at - 2), at + 1):  # from the comma before it, if any
            found = _USAGE.match(data, start)
            if found is not None:
                return found
        at = data.find(_USAGE_KEY, at + len(_USAGE_KEY))
    return None


def _usage(raw: object) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt, completion = raw.get("prompt_tokens"), raw.get("completion_tokens", 0)
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt, completion)
