"""Fault switches: crash and hang on a real simulator process, 500s and slowdown in process."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import httpx2
import openai
import pytest
from cic_local.infra import free_port
from cic_node_agent.engines.sim.__main__ import parse_config
from cic_node_agent.engines.sim.app import SimConfig, create_app
from cic_node_agent.engines.sim.faults import CRASH_EXIT_CODE, Faults, FaultSwitch
from cic_node_agent.engines.sim.latency import LatencyModel

MODEL = "sim-model"
COMPLETION = {"model": MODEL, "prompt": "hello", "max_tokens": 2}
NO_FAULTS = {"crash": False, "hang": False, "error_rate": 0.0, "slowdown": 1.0}
START_WITHIN = 60.0
"""A hang guard for a simulator process to listen, far above what it needs."""


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(SimConfig(MODEL)))
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        yield client


@contextmanager
def simulator(*flags: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A simulator process, once it listens (no request made: one may crash it); stopped after."""
    port = free_port()
    argv = [sys.executable, "-m", "cic_node_agent.engines.sim", "--port", str(port),
            "--model", MODEL, *flags]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + START_WITHIN
        while True:
            assert proc.poll() is None, "the simulator exited before listening"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the simulator never listened"
                time.sleep(0.05)
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            proc.stderr.close()


def exits_with(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    code = proc.wait(timeout=30)
    return code, proc.stderr.read().decode() if proc.stderr else ""


def test_crash_set_through_the_admin_endpoint_exits_the_process_non_zero() -> None:
    with simulator() as (proc, url), httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/health").status_code == 200
        with contextlib.suppress(httpx.TransportError):  # the answer may beat the exit, or not
            client.post("/sim/faults", json={"crash": True})
        code, stderr = exits_with(proc)
    assert code == CRASH_EXIT_CODE != 0
    assert "crash fault" in stderr


def test_crash_set_by_flag_exits_on_the_first_request() -> None:
    with simulator("--fault-crash") as (proc, url), httpx.Client(base_url=url, timeout=10) as c:
        assert proc.poll() is None  # listening, alive until asked anything
        with pytest.raises(httpx.TransportError):
            c.post("/v1/completions", json=COMPLETION)
        code, _ = exits_with(proc)
    assert code == CRASH_EXIT_CODE


def test_hang_leaves_requests_and_health_unanswered_until_cleared() -> None:
    with simulator() as (proc, url), httpx.Client(base_url=url, timeout=0.5) as client:
        assert client.post("/sim/faults", json={"hang": True}).json()["hang"] is True
        with pytest.raises(httpx.TimeoutException):
            client.post("/v1/completions", json=COMPLETION)
        with pytest.raises(httpx.TimeoutException):
            client.get("/health")
        with pytest.raises(httpx.TimeoutException):
            client.get("/metrics")
        assert client.get("/sim/faults").json() == {**NO_FAULTS, "hang": True}
        assert client.post("/sim/faults", json={}).json() == NO_FAULTS
        assert client.get("/health").status_code == 200
        assert client.post("/v1/completions", json=COMPLETION).status_code == 200
        assert proc.poll() is None


async def test_a_hang_holds_until_it_is_cleared() -> None:
    switch = FaultSwitch(Faults(hang=True))
    held = asyncio.create_task(switch.hold())
    await asyncio.sleep(0)
    assert not held.done()
    switch.set(Faults(slowdown=2.0))
    await held
    await switch.hold()  # no hang: returns at once


async def test_the_faults_start_off_and_a_post_replaces_them(http: httpx.AsyncClient) -> None:
    assert (await http.get("/sim/faults")).json() == NO_FAULTS
    set_ = await http.post("/sim/faults", json={"error_rate": 0.5, "slowdown": 3})
    assert set_.json() == {**NO_FAULTS, "error_rate": 0.5, "slowdown": 3.0}
    assert (await http.get("/sim/faults")).json() == set_.json()
    await http.post("/sim/faults", json={"slowdown": 2})
    assert (await http.get("/sim/faults")).json() == {**NO_FAULTS, "slowdown": 2.0}


@pytest.mark.parametrize(
    "body",
    [b'{"error_rate": 1.5}', b'{"slowdown": 0}', b'{"explode": true}', b"[]", b"{nope"],
)
async def test_a_bad_fault_setting_is_a_400_and_changes_nothing(
    http: httpx.AsyncClient, body: bytes
) -> None:
    response = await http.post("/sim/faults", content=body)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "BadRequestError"
    assert (await http.get("/sim/faults")).json() == NO_FAULTS


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", COMPLETION),
        ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}),
        ("/v1/embeddings", {"model": MODEL, "input": "x"}),
    ],
)
async def test_an_error_rate_of_one_answers_every_inference_with_a_500(
    http: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> None:
    await http.post("/sim/faults", json={"error_rate": 1.0})
    response = await http.post(path, json=body)
    assert response.status_code == 500
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("InternalServerError", 500, None)
    assert "error_rate" in error["message"]
    assert (await http.get("/health")).status_code == 200  # a gray failure: it looks healthy
    assert (await http.get("/v1/models")).status_code == 200


async def test_a_fraction_of_500s_follows_the_request_count(http: httpx.AsyncClient) -> None:
    async def statuses(count: int) -> list[int]:
        return [(await http.post("/v1/completions", json=COMPLETION)).status_code
                for _ in range(count)]  # fmt: skip

    await http.post("/sim/faults", json={"error_rate": 0.5})
    assert await statuses(6) == [200, 500] * 3
    await http.post("/sim/faults", json={"error_rate": 0.25})  # counting starts again
    assert await statuses(8) == [200, 200, 200, 500] * 2
    await http.post("/sim/faults", json={})
    assert await statuses(3) == [200] * 3


async def test_the_official_client_sees_an_internal_server_error() -> None:
    app = create_app(SimConfig(MODEL, faults=Faults(error_rate=1.0)))
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://sim") as http_client:
        client = openai.AsyncOpenAI(base_url="http://sim/v1", api_key="x",
                                    http_client=http_client, max_retries=0)  # fmt: skip
        with pytest.raises(openai.InternalServerError):
            await client.completions.create(model=MODEL, prompt="hi")


def test_slow_multiplies_every_latency_the_engine_waits() -> None:
    model = LatencyModel(ttft_overhead=0.1, prefill_per_token=0.01, inter_token_latency=0.02)
    switch = FaultSwitch(Faults(slowdown=4.0))
    normal = model.request_latency(10, 11, running=1)
    assert model.request_latency(10, 11, 1, switch.slowdown) == pytest.approx(4 * normal)
    assert model.inter_token(1, switch.slowdown) == pytest.approx(0.08)


def test_the_command_line_sets_faults_and_latencies() -> None:
    config, host, port = parse_config([
        "--port", "9", "--model", "m", "--inter-token-latency", "0.01", "--ttft-overhead", "0.2",
        "--prefill-per-token", "0.001", "--max-num-seqs", "8", "--time-factor-under-load", "2",
        "--seed", "5", "--embedding-dim", "32", "--fault-hang", "--fault-error-rate", "0.1",
        "--fault-slowdown", "3",
    ])  # fmt: skip
    assert (host, port, config.model, config.seed, config.embedding_dim) == ("127.0.0.1", 9, "m",
                                                                              5, 32)  # fmt: skip
    assert config.latency() == LatencyModel(0.2, 0.001, 0.01, 8, 2.0)
    assert config.faults == Faults(hang=True, error_rate=0.1, slowdown=3.0)


def test_the_node_agents_command_line_still_works_and_answers_at_once() -> None:
    config, _, _ = parse_config(["--port", "9", "--model", "m", "--max-model-len", "128",
                                 "--token-delay", "0.05"])  # fmt: skip
    assert (config.max_model_len, config.token_delay) == (128, 0.05)
    assert config.faults == Faults()
    assert parse_config(["--port", "9", "--model", "m"])[0].latency().is_zero


@pytest.mark.parametrize(
    "flags",
    [
        ["--token-delay", "-1"],
        ["--max-model-len", "0"],
        ["--max-num-seqs", "0"],
        ["--fault-error-rate", "2"],
        ["--fault-slowdown", "0"],
        ["--embedding-dim", "0"],
    ],
)
def test_a_bad_flag_is_refused(flags: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_config(["--port", "9", "--model", "m", *flags])
    assert exited.value.code == 2
    assert "error" in capsys.readouterr().err
