"""``/v1/embeddings``: deterministic unit vectors in OpenAI's shape, floats or base64."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
import httpx2
import openai
import pytest
from cic_node_agent.engines.sim.app import SimConfig, create_app
from cic_node_agent.engines.sim.text import embed, encode_vector

MODEL = "sim-embedder"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(SimConfig(MODEL, max_model_len=16)))
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        yield client


async def embeddings(http: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await http.post("/v1/embeddings", json={"model": MODEL, **fields})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(value * value for value in vector))


async def test_one_text_gets_one_unit_vector_of_64_dimensions(http: httpx.AsyncClient) -> None:
    answer = await embeddings(http, input="the spot node")
    assert (answer["object"], answer["model"]) == ("list", MODEL)
    assert answer["id"].startswith("embd-")
    [item] = answer["data"]
    assert (item["object"], item["index"]) == ("embedding", 0)
    assert len(item["embedding"]) == 64
    assert norm(item["embedding"]) == pytest.approx(1.0)
    assert answer["usage"] == {"prompt_tokens": 3, "total_tokens": 3, "completion_tokens": 0}


async def test_a_list_of_texts_gets_a_vector_each_in_order(http: httpx.AsyncClient) -> None:
    answer = await embeddings(http, input=["alpha", "beta gamma", "alpha"])
    vectors = [item["embedding"] for item in answer["data"]]
    assert [item["index"] for item in answer["data"]] == [0, 1, 2]
    assert vectors[0] == vectors[2]
    assert vectors[0] != vectors[1]
    assert answer["usage"]["prompt_tokens"] == 4


async def test_the_same_text_gets_the_same_vector_in_every_request(
    http: httpx.AsyncClient,
) -> None:
    first = await embeddings(http, input="warm replicas")
    again = await embeddings(http, input=["warm replicas"], user="someone else")
    assert first["data"][0]["embedding"] == again["data"][0]["embedding"]
    assert first["data"][0]["embedding"] == embed("warm replicas", 64)


async def test_fewer_dimensions_are_the_first_ones_normalised_again(
    http: httpx.AsyncClient,
) -> None:
    full = (await embeddings(http, input="gateway"))["data"][0]["embedding"]
    short = (await embeddings(http, input="gateway", dimensions=8))["data"][0]["embedding"]
    assert len(short) == 8
    assert norm(short) == pytest.approx(1.0)
    scale = norm(full[:8])
    assert short == pytest.approx([value / scale for value in full[:8]])


async def test_the_dimension_is_a_setting_of_the_simulator() -> None:
    app = create_app(SimConfig(MODEL, embedding_dim=8, seed=3))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as c:
        vector = (await embeddings(c, input="gateway"))["data"][0]["embedding"]
    assert len(vector) == 8
    assert vector == embed("gateway", 8, seed=3)
    assert vector != embed("gateway", 8, seed=0)


async def test_base64_carries_the_same_vector_as_float32s(http: httpx.AsyncClient) -> None:
    floats = (await embeddings(http, input="node"))["data"][0]["embedding"]
    encoded = (await embeddings(http, input="node", encoding_format="base64"))["data"][0]
    assert encoded["embedding"] == encode_vector(floats, "base64")
    transport = httpx2.ASGITransport(app=create_app(SimConfig(MODEL)))
    async with httpx2.AsyncClient(transport=transport, base_url="http://sim") as http_client:
        client = openai.AsyncOpenAI(base_url="http://sim/v1", api_key="x", http_client=http_client)
        answer = await client.embeddings.create(model=MODEL, input=["node"])  # base64 on the wire
    assert answer.data[0].embedding == pytest.approx(floats, abs=1e-6)
    assert answer.usage.prompt_tokens == 1


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"model": "other", "input": "x"}, 404),
        ({"model": MODEL}, 400),
        ({"model": MODEL, "input": []}, 400),
        ({"model": MODEL, "input": [1, 2]}, 400),
        ({"model": MODEL, "input": "x", "encoding_format": "int8"}, 400),
        ({"model": MODEL, "input": "x", "dimensions": 0}, 400),
        ({"model": MODEL, "input": "x", "dimensions": 65}, 400),
        ({"model": MODEL, "input": ["ok", "one two three four five six seven eight " * 3]}, 400),
    ],
)
async def test_a_bad_embedding_request_is_an_error_in_openai_shape(
    http: httpx.AsyncClient, body: dict[str, Any], status: int
) -> None:
    response = await http.post("/v1/embeddings", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (status, None)
    assert error["type"] == ("NotFoundError" if status == 404 else "BadRequestError")
    assert error["message"]
