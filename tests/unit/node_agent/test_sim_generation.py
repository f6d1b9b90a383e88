"""What the simulator says: seeded texts, ``n`` choices and ``stop`` strings."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import httpx
import httpx2
import openai
import pytest
from cic_node_agent.engines.sim.app import SimConfig, create_app
from cic_node_agent.engines.sim.text import VOCABULARY, apply_stop, generate, key_for

MODEL = "sim-model"
PROMPT = "tell me about spot nodes"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(SimConfig(MODEL)))
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        yield client


async def complete(http: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 12, **fields}
    response = await http.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def text_of(http: httpx.AsyncClient, **fields: Any) -> str:
    text: str = (await complete(http, **fields))["choices"][0]["text"]
    return text


async def stream_events(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> list[Any]:
    response = await http.post(path, json={"model": MODEL, "stream": True, **body})
    events = [event.removeprefix("data: ") for event in response.text.split("\n\n") if event]
    assert events[-1] == "[DONE]"
    return [json.loads(event) for event in events[:-1]]


async def test_the_same_seed_gives_the_same_text_whatever_the_temperature(
    http: httpx.AsyncClient,
) -> None:
    cold = await text_of(http, seed=7, temperature=0.0)
    hot = await text_of(http, seed=7, temperature=1.8, top_p=0.5)
    assert cold == hot
    assert len(cold.split()) == 12
    assert set(cold.split()) <= set(VOCABULARY)


async def test_a_different_seed_gives_a_different_text(http: httpx.AsyncClient) -> None:
    texts = {await text_of(http, seed=seed) for seed in (1, 2, 3)}
    assert len(texts) == 3
    assert await text_of(http) not in texts  # no seed: the prompt alone decides


async def test_the_simulators_own_seed_changes_every_text() -> None:
    transport = httpx.ASGITransport(app=create_app(SimConfig(MODEL, seed=42)))
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as other:
        transport = httpx.ASGITransport(app=create_app(SimConfig(MODEL)))
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as default:
            assert await text_of(other, seed=5) != await text_of(default, seed=5)
            assert await text_of(other, seed=5) == await text_of(other, seed=5)


async def test_a_shorter_answer_is_the_start_of_a_longer_one(http: httpx.AsyncClient) -> None:
    long = await text_of(http, seed=3, max_tokens=12)
    short = await text_of(http, seed=3, max_tokens=4)
    assert long.startswith(short)
    assert len(short.split()) == 4


async def test_n_choices_have_distinct_texts_and_the_first_is_the_single_answer(
    http: httpx.AsyncClient,
) -> None:
    single = await text_of(http, seed=9, max_tokens=1)
    answer = await complete(http, seed=9, max_tokens=1, n=5)
    choices = answer["choices"]
    assert [choice["index"] for choice in choices] == [0, 1, 2, 3, 4]
    texts = [choice["text"] for choice in choices]
    assert len(set(texts)) == 5  # even one token each
    assert texts[0] == single
    assert {choice["finish_reason"] for choice in choices} == {"length"}
    assert answer["usage"]["completion_tokens"] == 5


async def test_a_chat_with_n_choices_answers_each_as_a_message(http: httpx.AsyncClient) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "n": 3,
            "max_tokens": 4}  # fmt: skip
    answer = (await http.post("/v1/chat/completions", json=body)).json()
    messages = [choice["message"] for choice in answer["choices"]]
    assert {message["role"] for message in messages} == {"assistant"}
    assert len({message["content"] for message in messages}) == 3
    assert answer["usage"] == {"prompt_tokens": 5, "completion_tokens": 12, "total_tokens": 17}


async def test_a_stream_with_n_choices_interleaves_them_by_index(http: httpx.AsyncClient) -> None:
    whole = await complete(http, seed=4, max_tokens=3, n=2)
    chunks = await stream_events(
        http,
        "/v1/completions",
        {"prompt": PROMPT, "seed": 4, "max_tokens": 3, "n": 2,
         "stream_options": {"include_usage": True}},
    )  # fmt: skip
    tokens = [
        c["choices"][0] for c in chunks if c["choices"] and not c["choices"][0]["finish_reason"]
    ]
    assert [choice["index"] for choice in tokens] == [0, 1, 0, 1, 0, 1]
    for index in (0, 1):
        text = "".join(choice["text"] for choice in tokens if choice["index"] == index)
        assert text == whole["choices"][index]["text"]
    closing = [c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [(choice["index"], choice["finish_reason"]) for choice in closing] == [
        (0, "length"),
        (1, "length"),
    ]
    assert chunks[-1]["usage"]["completion_tokens"] == 6


async def test_a_chat_stream_with_n_choices_gives_each_its_role_first(
    http: httpx.AsyncClient,
) -> None:
    body = {"messages": [{"role": "user", "content": PROMPT}], "n": 3, "max_tokens": 2}
    chunks = await stream_events(http, "/v1/chat/completions", body)
    firsts = [chunk["choices"][0] for chunk in chunks[:3]]
    assert [(c["index"], c["delta"]) for c in firsts] == [
        (i, {"role": "assistant", "content": ""}) for i in range(3)
    ]
    assert len(chunks) == 3 + 3 * 2 + 3  # roles, two tokens each, closings


@pytest.mark.parametrize("as_list", [False, True])
async def test_a_stop_string_cuts_the_text_before_it(
    http: httpx.AsyncClient, as_list: bool
) -> None:
    full = await text_of(http, seed=11)
    stop = full.split()[5]
    expected = full[: full.index(stop)]
    stops: str | list[str] = ["never said", stop] if as_list else stop
    answer = await complete(http, seed=11, stop=stops)
    [choice] = answer["choices"]
    assert (choice["text"], choice["finish_reason"]) == (expected, "stop")
    assert stop not in choice["text"]
    assert answer["usage"]["completion_tokens"] <= 12


async def test_a_stop_string_never_said_changes_nothing(http: httpx.AsyncClient) -> None:
    answer = await complete(http, seed=11, stop=["never said", "xyzzy"])
    assert answer["choices"][0]["text"] == await text_of(http, seed=11)
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 12


async def test_a_stream_stops_at_the_same_place(http: httpx.AsyncClient) -> None:
    full = await text_of(http, seed=12)
    stop = full.split()[3]
    whole = await complete(http, seed=12, stop=stop)
    chunks = await stream_events(
        http, "/v1/completions", {"prompt": PROMPT, "seed": 12, "max_tokens": 12, "stop": stop}
    )
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole["choices"][0]["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_the_official_client_sends_stop_n_and_seed(http: httpx.AsyncClient) -> None:
    transport = httpx2.ASGITransport(app=create_app(SimConfig(MODEL)))
    async with httpx2.AsyncClient(transport=transport, base_url="http://sim") as http_client:
        client = openai.AsyncOpenAI(base_url="http://sim/v1", api_key="x", http_client=http_client)
        answer = await client.completions.create(
            model=MODEL, prompt=PROMPT, n=2, seed=1, max_tokens=12, stop=["\n", "xyzzy"]
        )
    expected = (await complete(http, n=2, seed=1))["choices"]
    assert [choice.text for choice in answer.choices] == [choice["text"] for choice in expected]


@pytest.mark.parametrize(
    ("stops", "pieces", "generated", "reason"),
    [
        ([], ["ab ", "cd ", "ef "], 3, "length"),
        (["zz"], ["ab ", "cd ", "ef "], 3, "length"),
        (["cd"], ["ab "], 2, "stop"),              # at a token's start: the token withheld
        (["d e"], ["ab ", "c"], 3, "stop"),        # mid-token: the token cut
        (["ab"], [], 1, "stop"),                   # nothing is left
        (["ef", "b c"], ["a"], 2, "stop"),         # the stop completed first wins
        (["cd ef", "d"], ["ab ", "c"], 2, "stop"),
        (["", "ef"], ["ab ", "cd "], 3, "stop"),   # an empty stop string is no stop
    ],
)  # fmt: skip
def test_apply_stop_keeps_the_text_before_the_first_completed_stop_string(
    stops: list[str], pieces: list[str], generated: int, reason: str
) -> None:
    answer = apply_stop(["ab ", "cd ", "ef "], stops)
    assert (list(answer.pieces), answer.generated, answer.finish_reason) == (
        pieces,
        generated,
        reason,
    )
    assert answer.text == "".join(pieces)


@pytest.mark.parametrize("count", [0, 1, 2, 30])
def test_generate_gives_count_vocabulary_words_the_same_each_time(count: int) -> None:
    tokens = generate(key_for(0, 1), PROMPT, count, index=2)
    assert tokens == generate(key_for(0, 1), PROMPT, count, index=2)
    assert len(tokens) == count
    assert all(token.endswith(" ") and token[:-1] in VOCABULARY for token in tokens)


@pytest.mark.parametrize("cut", [0, 1, 7, 29])
def test_an_answer_resumed_from_its_text_goes_on_as_the_whole_one(cut: int) -> None:
    whole = generate(key_for(0, None), PROMPT, 30)
    resumed = generate(key_for(0, None), PROMPT + "".join(whole[:cut]), 30 - cut)
    assert whole[:cut] + resumed == whole
    assert len(set(whole)) > 5  # words, not one repeated


async def test_a_chat_continuing_its_last_message_goes_on_with_it(
    http: httpx.AsyncClient,
) -> None:
    asked = [{"role": "user", "content": PROMPT}]
    whole = await http.post("/v1/chat/completions",
                            json={"model": MODEL, "messages": asked, "max_tokens": 9})  # fmt: skip
    text = whole.json()["choices"][0]["message"]["content"]
    begun = " ".join(text.split(" ")[:4]) + " "
    rest = await http.post("/v1/chat/completions", json={
        "model": MODEL, "max_tokens": 5, "continue_final_message": True,
        "add_generation_prompt": False,
        "messages": [*asked, {"role": "assistant", "content": begun}],
    })  # fmt: skip
    assert begun + rest.json()["choices"][0]["message"]["content"] == text
    both = await http.post("/v1/chat/completions",
                           json={"model": MODEL, "messages": asked,
                                 "continue_final_message": True})  # fmt: skip
    assert both.status_code == 400
    assert "add_generation_prompt" in both.json()["error"]["message"]


def choice_texts(response: httpx.Response) -> list[str]:
    """Each choice's text, from a whole answer or joined from a stream's chunks."""
    if not response.headers["content-type"].startswith("text/event-stream"):
        return [choice["text"] for choice in response.json()["choices"]]
    texts: dict[int, str] = defaultdict(str)
    for event in response.text.split("\n\n")[:-2]:  # the last two: [DONE] and nothing
        for choice in json.loads(event.removeprefix("data: "))["choices"]:
            texts[choice["index"]] += choice["text"]
    return [texts[index] for index in sorted(texts)]


async def test_a_modelled_latency_and_a_queue_change_when_not_what() -> None:
    """Four at once through a batch of two, with every latency set: the same answers."""
    slow = SimConfig(MODEL, token_delay=0.002, ttft_overhead=0.002, prefill_per_token=0.001,
                     max_num_seqs=2, time_factor_under_load=2.0)  # fmt: skip
    bodies = [
        {"model": MODEL, "prompt": f"{PROMPT} {i}", "max_tokens": 5, "n": 2, "stream": i % 2 == 1}
        for i in range(4)
    ]

    async def answers(config: SimConfig) -> list[list[str]]:
        transport = httpx.ASGITransport(app=create_app(config))
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
            replies = await asyncio.gather(
                *(client.post("/v1/completions", json=b) for b in bodies)
            )
            metrics = (await client.get("/metrics")).text
        assert [reply.status_code for reply in replies] == [200] * 4
        count = f'vllm:e2e_request_latency_seconds_count{{engine="0",model_name="{MODEL}"}} 4.0'
        assert count in metrics
        return [choice_texts(reply) for reply in replies]

    slowly = await answers(slow)
    assert slowly == await answers(SimConfig(MODEL))
    assert all(len(texts) == 2 for texts in slowly)
