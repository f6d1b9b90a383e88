"""Reading usage from answers, and handing a stream on as the client asked for it."""

from __future__ import annotations

import pytest
from cic_gateway.domain.metering import (
    StreamMeter,
    Usage,
    usage_asked,
    usage_of,
    with_usage_requested,
)

CHUNK = (
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"a \\"usage\\":null"}}],'
    b'"usage":null}\n\n'
)
RUNNING = (  # vLLM's continuous_usage_stats: the usage so far in every chunk
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"x"}}],'
    b'"usage":{"prompt_tokens":5,"total_tokens":6,"completion_tokens":1,'
    b'"prompt_tokens_details":{"cached_tokens":0}}}\n\n'
)
USAGE = (
    b'data: {"id":"c1","choices":[],'
    b'"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}\n\n'
)
DONE = b"data: [DONE]\n\n"
BARE = b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'


def test_a_stream_whose_client_did_not_ask_loses_what_asking_added() -> None:
    meter = StreamMeter("none")
    stream = CHUNK + RUNNING + USAGE + DONE
    pieces = [stream[i : i + 7] for i in range(0, len(stream), 7)]  # split anywhere
    out = b"".join(meter.feed(p) for p in pieces) + meter.flush()
    assert out == CHUNK.replace(b',"usage":null', b"") + BARE + DONE
    assert b'\\"usage\\":null' in out  # generated text is never touched
    assert meter.usage == Usage(5, 2)


def test_a_client_that_asked_for_the_final_usage_gets_it_and_no_running_one() -> None:
    meter = StreamMeter("final")
    assert meter.feed(RUNNING + USAGE + DONE) == BARE + USAGE + DONE
    assert meter.usage == Usage(5, 2)


def test_a_stream_whose_client_asked_for_everything_is_passed_on_byte_for_byte() -> None:
    meter = StreamMeter("running")
    stream = CHUNK + RUNNING + USAGE + DONE
    out = meter.feed(stream[:150]) + meter.feed(stream[150:]) + meter.flush()
    assert out == stream
    assert meter.usage == Usage(5, 2)


def test_a_stream_cut_before_its_end_has_the_usage_of_its_last_event_passed_on() -> None:
    meter = StreamMeter("none")
    later = RUNNING.replace(b'"total_tokens":6,"completion_tokens":1',
                            b'"total_tokens":8,"completion_tokens":3')  # fmt: skip
    assert meter.feed(RUNNING + later + later[:30]) == BARE + BARE  # the last one unfinished
    assert meter.usage == Usage(5, 3)
    assert StreamMeter("none").usage is None


def test_a_usage_first_in_its_chunk_is_cut_with_the_comma_after_it() -> None:
    first = b'data: {"usage":{"prompt_tokens":1,"completion_tokens":1},"choices":[{"i":0}]}\n\n'
    assert StreamMeter("none").feed(first) == b'data: {"choices":[{"i":0}]}\n\n'


@pytest.mark.parametrize(
    ("body", "usage"),
    [
        (b'{"usage": {"prompt_tokens": 3, "completion_tokens": 4}}', Usage(3, 4)),
        (b'{"usage": {"prompt_tokens": 3}}', Usage(3, 0)),  # embeddings
        (b'{"usage": null}', None),
        (b"not json", None),
        (b"[]", None),
    ],
)
def test_usage_of_a_whole_answer(body: bytes, usage: Usage | None) -> None:
    assert usage_of(body) == usage


def test_every_chunks_usage_is_asked_for_streams_unless_the_client_did() -> None:
    assert with_usage_requested({"model": "m"}) is None
    everything = {"include_usage": True, "continuous_usage_stats": True}
    asked = {"model": "m", "stream": True, "stream_options": everything}
    assert with_usage_requested(asked) is None
    assert usage_asked(asked) == "running"
    for options, client in ((None, "none"), ({"include_usage": True}, "final")):
        request = {"model": "m", "stream": True, "stream_options": options}
        rewritten = with_usage_requested(request)
        assert rewritten is not None
        assert rewritten["stream_options"] == everything
        assert usage_asked(request) == client
