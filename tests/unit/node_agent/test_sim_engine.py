"""The simulator speaks vLLM's OpenAI dialect: checked with the official client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import httpx2
import openai
import pytest
from cic_node_agent.engines.sim.app import SimConfig, create_app
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.types import Message

MODEL = "sim-model"
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "hello there"}
]


@pytest.fixture
def app() -> Starlette:
    return create_app(SimConfig(MODEL, max_model_len=64))


@pytest.fixture
async def http(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        yield client


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official client, in process, over httpx2: the HTTP library it is typed for."""
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://sim") as http_client:
        yield openai.AsyncOpenAI(base_url="http://sim/v1", api_key="x", http_client=http_client)


async def samples(http: httpx.AsyncClient) -> dict[str, float]:
    """``/metrics`` as ``name -> value``, summed over labels (``finished_reason``...)."""
    lines = (await http.get("/metrics")).text.splitlines()
    found: dict[str, float] = {}
    for row in (line for line in lines if line and not line.startswith("#")):
        name = row.split("{", 1)[0]
        found[name] = found.get(name, 0.0) + float(row.rsplit(" ", 1)[1])
    return found


async def test_a_chat_answer_has_max_tokens_tokens_and_exact_usage(
    client: openai.AsyncOpenAI,
) -> None:
    answer = await client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
    assert answer.object == "chat.completion"
    assert answer.id.startswith("chatcmpl-")
    assert answer.model == MODEL
    assert answer.choices[0].finish_reason == "length"
    assert answer.choices[0].message.role == "assistant"
    content = answer.choices[0].message.content
    assert content is not None
    assert len(content.split()) == 5
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (2, 5)
    assert answer.usage.total_tokens == 7


async def test_without_max_tokens_sixteen_tokens_are_generated(
    client: openai.AsyncOpenAI,
) -> None:
    answer = await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 16


async def test_the_answer_depends_on_the_whole_conversation(
    client: openai.AsyncOpenAI,
) -> None:
    async def answer(*contents: str) -> str | None:
        messages: list[openai.types.chat.ChatCompletionMessageParam] = [
            {"role": "user", "content": c} for c in contents
        ]
        reply = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8)
        return reply.choices[0].message.content

    assert await answer("first", "hello") == await answer("first", "hello")
    assert await answer("first", "hello") != await answer("other", "hello")
    assert await answer("hello") != await answer("hello again")


async def test_a_stream_joins_to_the_same_text_and_ends_with_usage_when_asked(
    client: openai.AsyncOpenAI,
) -> None:
    whole = await client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=6)
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (2, 6)
    assert all(c.usage is None for c in chunks[:-1])


async def test_a_stream_without_include_usage_carries_no_usage(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=3, stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert len(chunks) == 5  # the role, three tokens, the finish
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"


async def test_a_stream_is_server_sent_events_ending_in_done(http: httpx.AsyncClient) -> None:
    body = {
        "model": MODEL,
        "messages": MESSAGES,
        "max_tokens": 2,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = await http.post("/v1/chat/completions", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = response.text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    chunks = [json.loads(event.removeprefix("data: ")) for event in events[:-2]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-2]["choices"][0]["delta"] == {}
    assert all("usage" in chunk and chunk["usage"] is None for chunk in chunks[:-1])
    assert chunks[-1]["usage"]["total_tokens"] == 4


async def test_continuous_usage_stats_put_the_usage_so_far_in_every_chunk(
    client: openai.AsyncOpenAI,
) -> None:
    stream = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=3, stream=True,
        extra_body={"stream_options": {"include_usage": True, "continuous_usage_stats": True}},
    )  # fmt: skip
    chunks = [chunk async for chunk in stream]
    counts = [(c.usage.prompt_tokens, c.usage.completion_tokens) for c in chunks if c.usage]
    assert len(counts) == len(chunks)  # role, three tokens, finish, the final usage
    assert counts == [(2, 0), (2, 1), (2, 2), (2, 3), (2, 3), (2, 3)]
    assert chunks[-1].choices == []


async def test_text_completions_work_streamed_and_not(client: openai.AsyncOpenAI) -> None:
    whole = await client.completions.create(model=MODEL, prompt="once upon", max_tokens=4)
    assert whole.object == "text_completion"
    assert whole.choices[0].finish_reason == "length"
    assert len(whole.choices[0].text.split()) == 4
    assert whole.usage is not None
    assert whole.usage.prompt_tokens == 2
    stream = await client.completions.create(
        model=MODEL,
        prompt="once upon",
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4


async def test_a_list_of_prompts_is_answered_for_the_first(client: openai.AsyncOpenAI) -> None:
    first = await client.completions.create(model=MODEL, prompt="one two three", max_tokens=6)
    listed = await client.completions.create(
        model=MODEL, prompt=["one two three", "four"], max_tokens=6
    )
    assert listed.choices[0].text == first.choices[0].text
    assert listed.usage is not None
    assert listed.usage.prompt_tokens == 3


async def test_an_unknown_model_is_a_not_found_error(
    client: openai.AsyncOpenAI, http: httpx.AsyncClient
) -> None:
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        await client.chat.completions.create(model="other", messages=MESSAGES)
    response = await http.post("/v1/completions", json={"model": "other", "prompt": "hi"})
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "message": "The model `other` does not exist.",
            "type": "NotFoundError",
            "param": None,
            "code": 404,
        }
    }


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": MODEL}),
        ("/v1/chat/completions", {"messages": MESSAGES}),
        ("/v1/chat/completions", {"model": MODEL, "messages": []}),
        ("/v1/chat/completions", {"model": MODEL, "messages": MESSAGES, "n": 0}),
        ("/v1/chat/completions", {"model": MODEL, "messages": MESSAGES, "max_tokens": 0}),
        ("/v1/chat/completions", {"model": MODEL, "messages": MESSAGES, "max_tokens": 63}),
        ("/v1/chat/completions", {"model": MODEL, "messages": MESSAGES, "stream_options": {}}),
        ("/v1/chat/completions", [1, 2]),
        ("/v1/completions", {"model": MODEL}),
        ("/v1/completions", {"model": MODEL, "prompt": []}),
    ],
)
async def test_a_malformed_request_is_a_400_in_openai_shape(
    http: httpx.AsyncClient, path: str, body: object
) -> None:
    response = await http.post(path, json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("BadRequestError", 400, None)
    assert error["message"]


async def test_a_body_that_is_not_json_is_a_400(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/chat/completions", content=b"{not json")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "BadRequestError"


async def test_unknown_fields_and_sampling_options_are_accepted(http: httpx.AsyncClient) -> None:
    body = {
        "model": MODEL,
        "messages": MESSAGES,
        "max_tokens": 2,
        "temperature": 0.7,
        "top_p": 0.9,
        "seed": 1,
        "n": 1,
        "stream": False,
        "some_vllm_extension": {"x": 1},
    }
    response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert response.json()["usage"]["completion_tokens"] == 2


async def test_an_abandoned_stream_is_running_until_the_client_leaves(
    app: Starlette, http: httpx.AsyncClient
) -> None:
    """The client goes away after the first token; the request stops counting as running."""
    body = json.dumps({"model": MODEL, "messages": MESSAGES, "max_tokens": 50, "stream": True})
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000),
        "headers": [(b"content-type", b"application/json"), (b"host", b"sim")],
        "server": ("sim", 80),
    }  # fmt: skip
    events: list[bytes] = []
    running_mid_stream: list[float] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": body.encode(), "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] != "http.response.body":
            return
        events.append(message["body"])
        if len(events) == 2:
            running_mid_stream.append((await samples(http))["vllm:num_requests_running"])
            raise OSError("the client went away")

    with pytest.raises(ClientDisconnect):
        await app(scope, receive, send)
    assert running_mid_stream == [1.0]
    after = await samples(http)
    assert after["vllm:num_requests_running"] == 0
    text = (await http.get("/metrics")).text
    abort = f'{{engine="0",finished_reason="abort",model_name="{MODEL}"}}'
    assert f"vllm:request_success_total{abort} 1.0" in text  # and nothing else finished
    assert after["vllm:request_success_total"] == 1
    assert after["vllm:generation_tokens_total"] < 50


async def test_models_and_health_answer(http: httpx.AsyncClient) -> None:
    health = await http.get("/health")
    assert (health.status_code, health.content) == (200, b"")
    models = (await http.get("/v1/models")).json()
    assert models["object"] == "list"
    [card] = models["data"]
    assert (card["id"], card["root"], card["parent"]) == (MODEL, MODEL, None)
    assert (card["object"], card["owned_by"], card["max_model_len"]) == ("model", "vllm", 64)


async def test_the_official_client_lists_the_model(client: openai.AsyncOpenAI) -> None:
    assert [m.id async for m in client.models.list()] == [MODEL]
