"""Resuming a cut stream: what was sent, read back; the request for the rest; the rest
made to look like the first part. Pure functions, on streams as vLLM writes them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cic_gateway.domain.metering import DONE, Usage
from cic_gateway.domain.resumption import Splice, Transcript, continuation, resumable


def sse(chunk: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


def chat_chunk(ident: str, content: str | None, *, role: bool = False,
               finish: str | None = None, created: int = 100) -> bytes:  # fmt: skip
    delta: dict[str, Any] = {} if content is None else {"content": content}
    if role:
        delta = {"role": "assistant", **delta}
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return sse({"id": ident, "object": "chat.completion.chunk", "created": created,
                "model": "m", "choices": [choice]})  # fmt: skip


def text_chunk(ident: str, text: str, finish: str | None = None) -> bytes:
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
    return sse({"id": ident, "object": "text_completion", "created": 100, "model": "m",
                "choices": [choice]})  # fmt: skip


def test_what_was_sent_is_read_back_as_text_tokens_and_identity() -> None:
    transcript = Transcript()
    transcript.add(chat_chunk("c-1", "", role=True) + chat_chunk("c-1", "spot "))
    transcript.add(chat_chunk("c-1", "node "))
    progress = transcript.read()
    assert (progress.id, progress.created, progress.text, progress.tokens, progress.finished) == (
        "c-1", 100, "spot node ", 2, False,
    )  # fmt: skip
    transcript.add(chat_chunk("c-1", None, finish="length"))
    assert transcript.read().finished


def test_a_transcript_beyond_its_limit_can_no_longer_resume() -> None:
    transcript = Transcript(limit=300)
    transcript.add(text_chunk("t", "a "))
    assert transcript.complete
    transcript.add(text_chunk("t", "b " * 200))
    assert not transcript.complete


@pytest.mark.parametrize(
    ("request_body", "chat", "expected"),
    [
        ({"stream": True, "prompt": "p"}, False, True),
        ({"stream": True, "prompt": ["p", "q"]}, False, False),
        ({"stream": True, "prompt": "p", "n": 2}, False, False),
        ({"stream": True, "prompt": "p", "echo": True}, False, False),
        ({"stream": False, "prompt": "p"}, False, False),
        ({"stream": True, "messages": [{"role": "user", "content": "x"}]}, True, True),
        ({"stream": True, "messages": []}, True, False),
        ({"stream": True, "messages": [{"role": "user", "content": "x"}],
          "tools": [{"type": "function"}]}, True, False),
        ({"stream": True, "prompt": "p", "response_format": {"type": "json_object"}}, False,
         False),
        ({"stream": True, "continue_final_message": True, "add_generation_prompt": False,
          "messages": [{"role": "assistant", "content": [{"type": "text"}]}]}, True, False),
    ],
)  # fmt: skip
def test_only_one_choice_streams_with_an_extendable_prompt_resume(
    request_body: dict[str, Any], chat: bool, expected: bool
) -> None:
    assert resumable(request_body, chat) is expected


def test_a_completion_goes_on_from_its_prompt_and_text_with_fewer_tokens() -> None:
    transcript = Transcript()
    transcript.add(text_chunk("t", "spot ") + text_chunk("t", "node "))
    request = {"model": "m", "prompt": "tell me", "max_tokens": 5, "stream": True}
    body = continuation(request, False, transcript.read())
    assert body is not None
    assert json.loads(body) == {**request, "prompt": "tell mespot node ", "max_tokens": 3}
    request["max_tokens"] = 2
    assert continuation(request, False, transcript.read()) is None  # nothing left to ask
    floor = continuation({**request, "max_tokens": 9, "min_tokens": 3}, False, transcript.read())
    assert json.loads(floor or b"")["min_tokens"] == 1  # the tokens sent count towards it


def test_a_chat_goes_on_as_its_assistant_message_continued() -> None:
    transcript = Transcript()
    transcript.add(chat_chunk("c", "", role=True) + chat_chunk("c", "spot "))
    asked = [{"role": "user", "content": "hi"}]
    body = continuation({"messages": asked, "max_completion_tokens": 4}, True, transcript.read())
    assert json.loads(body or b"") == {
        "messages": [*asked, {"role": "assistant", "content": "spot "}],
        "max_completion_tokens": 3, "continue_final_message": True,
        "add_generation_prompt": False,
    }  # fmt: skip
    begun = [*asked, {"role": "assistant", "content": "Sure: "}]
    again = continuation({"messages": begun, "continue_final_message": True,
                          "add_generation_prompt": False}, True, transcript.read())  # fmt: skip
    assert json.loads(again or b"")["messages"][-1] == {"role": "assistant",
                                                        "content": "Sure: spot "}  # fmt: skip


def test_the_rest_takes_the_first_parts_id_and_time_and_counts_the_resumed_text() -> None:
    first = Transcript()
    first.add(chat_chunk("c-first", "", role=True, created=100) + chat_chunk("c-first", "a "))
    first.add(chat_chunk("c-first", "b "))
    splice = Splice(first.read())
    rest = (
        chat_chunk("c-next", "", role=True, created=222)
        + chat_chunk("c-next", "c ", created=222)
        + chat_chunk("c-next", None, finish="stop", created=222)
        + sse({"id": "c-next", "object": "chat.completion.chunk", "created": 222, "model": "m",
               "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 1,
                                        "total_tokens": 8}})
        + DONE
    )  # fmt: skip
    out = splice.rewrite(rest)
    events = [e for e in out.split(b"\n\n") if e]
    assert events[-1] == DONE.strip()
    chunks = [json.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    assert [c["id"] for c in chunks] == ["c-first"] * 3  # no second role chunk
    assert {c["created"] for c in chunks} == {100}
    assert chunks[0]["choices"][0]["delta"] == {"content": "c "}
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    assert splice.usage(Usage(7, 1)) == Usage(5, 3)
    assert splice.usage(None) is None


def test_with_the_engines_running_usage_the_whole_stream_counts_exactly() -> None:
    """The cut part had used 5 prompt and 3 completion tokens by its last event (its
    text re-tokenises differently, so the continuation's prompt says nothing exact)."""
    first = Transcript()
    first.add(chat_chunk("c-first", "", role=True) + chat_chunk("c-first", "ab "))
    splice = Splice(first.read(), Usage(5, 3))
    assert splice.usage(Usage(9, 2)) == Usage(5, 5)
    assert splice.usage(None) == Usage(5, 3)  # cut again before any usage: what it had
