"""Reading usage from answers, and handing a stream on as the client asked for it."""

from __future__ import annotations

import pytest
from cic_gateway.domain.metering import StreamMeter, Usage, usage_of, with_usage_requested

CHUNK = (
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"a \\"usage\\":null"}}],'
    b'"usage":null}\n\n'
)
USAGE = (
    b'data: {"id":"c1","choices":[],'
    b'"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}\n\n'
)
DONE = b"data: [DONE]\n\n"


def test_a_stream_whose_client_did_not_ask_loses_what_asking_added() -> None:
    meter = StreamMeter(strip=True)
    stream = CHUNK + USAGE + DONE
    pieces = [stream[i : i + 7] for i in range(0, len(stream), 7)]  # split anywhere
    out = b"".join(meter.feed(p) for p in pieces) + meter.flush()
    assert out == CHUNK.replace(b',"usage":null', b"") + DONE
    assert b'\\"usage\\":null' in out  # generated text is never touched
    assert meter.usage == Usage(5, 2)


def test_a_stream_whose_client_asked_is_passed_on_byte_for_byte() -> None:
    meter = StreamMeter(strip=False)
    out = meter.feed(CHUNK + USAGE[:20]) + meter.feed(USAGE[20:] + DONE) + meter.flush()
    assert out == CHUNK + USAGE + DONE
    assert meter.usage == Usage(5, 2)


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


def test_usage_is_asked_for_streams_only_when_the_client_did_not() -> None:
    assert with_usage_requested({"model": "m"}) is None
    asked = {"model": "m", "stream": True, "stream_options": {"include_usage": True}}
    assert with_usage_requested(asked) is None
    rewritten = with_usage_requested({"model": "m", "stream": True})
    assert rewritten is not None
    assert rewritten["stream_options"] == {"include_usage": True}
