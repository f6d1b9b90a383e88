"""What a request used, read from the engine's answer as it passes through.

Streamed answers carry their usage only when asked (``stream_options.include_usage``):
the gateway always asks, and when the client did not, hands on the stream as the engine
would have sent it without the option — no usage chunk, no ``"usage": null`` in every
chunk (an unescaped ``"usage"`` key cannot occur inside a JSON string, so dropping those
bytes never touches generated text).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["DONE", "StreamMeter", "Usage", "reserved_tokens", "usage_of", "with_usage_requested"]

DONE = b"data: [DONE]\n\n"
"""A stream's last event."""

_NULL_USAGE = (b',"usage":null', b', "usage": null', b'"usage":null,', b'"usage": null, ')


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


def usage_of(body: bytes) -> Usage | None:
    """The usage of a whole (not streamed) answer, when it has one."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return _usage(parsed.get("usage")) if isinstance(parsed, dict) else None


def with_usage_requested(request: dict[str, Any]) -> dict[str, Any] | None:
    """For a streamed request whose client did not ask for its usage: the request to send
    upstream instead, asking for it. None: send the client's as it is."""
    if request.get("stream") is not True:
        return None
    options = request.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return None
    asked = {**(options if isinstance(options, dict) else {}), "include_usage": True}
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
    """Follows a server-sent event stream, event by event, keeping its usage; with
    ``strip``, removes what asking for the usage added."""

    def __init__(self, strip: bool) -> None:
        self._strip = strip
        self._pending = b""
        self.usage: Usage | None = None
        self.done = False
        """The stream's last event has come."""

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
        if b'"usage":{' in event or b'"usage": {' in event:
            data = event.strip().removeprefix(b"data:").strip()
            try:
                parsed = json.loads(data)
            except ValueError:
                return event
            found = _usage(parsed.get("usage")) if isinstance(parsed, dict) else None
            if found is not None:
                self.usage = found
                if self._strip and not parsed.get("choices"):
                    return b""  # the usage chunk the client did not ask for
            return event
        if self._strip:
            for added in _NULL_USAGE:
                event = event.replace(added, b"")
        return event


def _usage(raw: object) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt, completion = raw.get("prompt_tokens"), raw.get("completion_tokens", 0)
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt, completion)
