"""The simulator speaks vLLM's OpenAI dialect: checked with the official client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import httpx2
import openai
import pytest
from cic_node_agent.engines.sim.app import SimConfig, create_app
from fastapi import FastAPI

MODEL = "sim-model"
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "hello there"}
]


@pytest.fixture
def app() -> FastAPI:
    return create_app(SimConfig(MODEL))


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        yield client


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official client, over the HTTP library it is built on, in process."""
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://sim") as http_client:
        yield openai.AsyncOpenAI(base_url="http://sim/v1", api_key="x", http_client=http_client)


async def test_a_chat_answer_has_max_tokens_tokens_and_exact_usage(
    client: openai.AsyncOpenAI,
) -> None:
    answer = await client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
    assert answer.object == "chat.completion"
    assert answer.choices[0].finish_reason == "length"
    content = answer.choices[0].message.content
    assert content is not None
    assert len(content.split()) == 5
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (2, 5)
    assert answer.usage.total_tokens == 7


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
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 6
    assert all(c.usage is None for c in chunks[:-1])


async def test_a_stream_without_include_usage_carries_no_usage(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=3, stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"


async def test_text_completions_work_streamed_and_not(client: openai.AsyncOpenAI) -> None:
    whole = await client.completions.create(model=MODEL, prompt="once upon", max_tokens=4)
    assert len(whole.choices[0].text.split()) == 4
    stream = await client.completions.create(
        model=MODEL, prompt="once upon", max_tokens=4, stream=True
    )
    assert "".join([c.choices[0].text async for c in stream]) == whole.choices[0].text


async def test_an_unknown_model_is_a_not_found_error(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        await client.chat.completions.create(model="other", messages=MESSAGES)


@pytest.mark.parametrize(
    "body",
    [
        {"model": MODEL},
        {"model": MODEL, "messages": []},
        {"model": MODEL, "messages": MESSAGES, "n": 2},
        {"model": MODEL, "messages": MESSAGES, "max_tokens": 0},
    ],
)
async def test_a_malformed_request_is_a_400_in_openai_shape(
    http: httpx.AsyncClient, body: dict[str, object]
) -> None:
    response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "BadRequestError"


async def test_metrics_count_finished_requests(
    http: httpx.AsyncClient, client: openai.AsyncOpenAI
) -> None:
    await client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=3)
    text = (await http.get("/metrics")).text
    label = f'{{model_name="{MODEL}"}}'
    assert f"vllm:num_requests_running{label} 0" in text
    assert f"vllm:generation_tokens_total{label} 3" in text
    assert f"vllm:request_success_total{label} 1" in text
    assert "# TYPE vllm:kv_cache_usage_perc gauge" in text


async def test_models_and_health_answer(http: httpx.AsyncClient) -> None:
    assert (await http.get("/health")).status_code == 200
    models = (await http.get("/v1/models")).json()
    assert [m["id"] for m in models["data"]] == [MODEL]
