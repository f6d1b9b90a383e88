"""Chaos: engines killed and hung under load, behind our gateway (and, for contrast, vLLM's
router), with the official ``openai`` client.

Each target gets three fresh simulator engines of one model (``bench-chaos``, streaming
like the benchmark's: a first token after 20 ms, then one every 10 ms), which nothing else
uses, since the run kills them. Sixteen clients (``AsyncOpenAI``, ``max_retries=0``)
keep sending chat completions, each in turn a stream of 40 tokens and a non-streamed
answer of 16 (after a round of warm-up, not counted). After 4 s the engine with the most
streams in flight is killed (SIGKILL) and the next one stopped (SIGSTOP); the load goes
on for 10 s more, then what is still in flight has 20 s to end. The faulted engines are
then let go (SIGCONT, SIGKILL), and the same requests are asked, non-streamed, of the
engine left healthy: the text every answer should have had. Our gateway runs with its
default watchdog (``CIC_PROBE_AFTER``, not tuned down): a request kept waiting that
long gets its replica probed. How the requests are counted: see ``chaos_figures``. vLLM's
router names no replica, so its cut streams are not told from the others: only its
failures are shown, for contrast.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import openai
from cic_common.processes import free_port
from cic_gateway.settings import GatewaySettings
from openai.types.chat import ChatCompletionMessageParam

from .chaos_figures import Call, ChaosFigures, Fault, busiest, figures
from .cic import ROOT, gateway
from .peers import vllm_router
from .procs import serve
from .report import CIC, VLLM_ROUTER
from .targets import STREAMING, Backends, Target

__all__ = ["CHAOS_TARGETS", "describe", "run_chaos"]

MODEL = "bench-chaos"
ENGINES = 3
CLIENTS = 16
STREAM_TOKENS, PLAIN_TOKENS = 40, 16
BEFORE_S, AFTER_S, DRAIN_S = 4.0, 10.0, 20.0
PROBE_AFTER = f"{GatewaySettings.model_fields['probe_after'].default:g}"
"""The gateway's default, set so that no ``CIC_PROBE_AFTER`` of the environment leaks in."""
PROMPTS = tuple(f"tell me how spot capacity comes and goes, part {i}" for i in range(16))
KEPT = ROOT / ".cic" / "bench-gateway-chaos"
"""Where each run's logs are kept (the work directory is removed at the end)."""


def _cic(backends: Backends, workdir: Path) -> AbstractContextManager[Target]:
    return gateway(backends, workdir, env={"CIC_PROBE_AFTER": PROBE_AFTER})


CHAOS_TARGETS = {CIC: _cic, VLLM_ROUTER: vllm_router}


@dataclass
class Fleet:
    """The three engines: base URLs and pids, by replica name (the gateway's node ids)."""

    urls: dict[str, str]
    pids: dict[str, int]
    faulted: set[str] = field(default_factory=set)
    wall: float = 0.0
    """``time.time() - time.monotonic()`` when the faults struck (to read logs by)."""

    def strike(self, calls: list[Call]) -> list[Fault]:
        """SIGKILL the replica with the most streams in flight, SIGSTOP the next."""
        faults = []
        self.wall = time.time() - time.monotonic()
        order = busiest(calls, list(self.urls), time.monotonic())
        for name, sig in zip(order, (signal.SIGKILL, signal.SIGSTOP), strict=False):
            os.kill(self.pids[name], sig)
            faults.append(Fault(name, sig.name, time.monotonic()))
            self.faulted.add(name)
        return faults

    def release(self) -> None:
        """SIGCONT and SIGKILL the faulted engines (a stopped one ignores SIGTERM)."""
        for name in self.faulted:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pids[name], sig)


@contextmanager
def fleet(workdir: Path) -> Iterator[Fleet]:
    """Three fresh engines of ``MODEL``, each its own process, until the end of the block."""
    engines = Fleet({}, {})
    with ExitStack() as stack:
        for i in range(ENGINES):
            port, name = free_port(), f"{MODEL}-{i}"  # the node ids ``cic.gateway`` gives
            base = f"http://127.0.0.1:{port}"
            argv = [sys.executable, "-m", "cic_node_agent.engines.sim", "--port", str(port),
                    "--model", MODEL, *STREAMING]  # fmt: skip
            engines.pids[name] = stack.enter_context(serve(argv, f"{base}/health",
                                                           workdir / f"{name}.log"))  # fmt: skip
            engines.urls[name] = base
        stack.callback(engines.release)  # before the engines are stopped
        yield engines


def _messages(prompt: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": prompt}]


async def _call(client: openai.AsyncOpenAI, call: Call) -> None:
    """Send ``call``'s request and note what came back (any failure is a figure)."""
    try:
        if call.streamed:
            stream = await client.chat.completions.create(
                model=MODEL, messages=_messages(call.prompt), max_tokens=call.max_tokens,
                stream=True,
            )  # fmt: skip
            call.started = time.monotonic()
            call.replica = stream.response.headers.get("x-cic-replica")
            async for chunk in stream:
                for choice in chunk.choices:
                    call.text += choice.delta.content or ""
                    call.finish_reason = choice.finish_reason or call.finish_reason
        else:
            raw = await client.chat.completions.with_raw_response.create(
                model=MODEL, messages=_messages(call.prompt), max_tokens=call.max_tokens
            )
            call.started = time.monotonic()
            call.replica = raw.headers.get("x-cic-replica")
            answer = raw.parse()
            call.text = answer.choices[0].message.content or ""
            call.finish_reason = answer.choices[0].finish_reason
    except Exception as exc:  # counted, whatever it is
        call.error = f"{type(exc).__name__}: {exc}"
    call.ended = time.monotonic()


async def _expected(base: str) -> dict[tuple[str, int], str]:
    """Every request's text, asked non-streamed of ``base`` (a healthy engine) directly."""
    pairs = [(prompt, tokens) for prompt in PROMPTS for tokens in (STREAM_TOKENS, PLAIN_TOKENS)]
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:

        async def one(prompt: str, tokens: int) -> str:
            body = {"model": MODEL, "messages": _messages(prompt), "max_tokens": tokens}
            answer = await http.post("/v1/chat/completions", json=body)
            answer.raise_for_status()
            return str(answer.json()["choices"][0]["message"]["content"])

        texts = await asyncio.gather(*(one(*pair) for pair in pairs))
    return dict(zip(pairs, texts, strict=True))


async def _load(target: Target, engines: Fleet) -> ChaosFigures:
    calls: list[Call] = []
    api_key = target.headers.get("Authorization", "Bearer none").removeprefix("Bearer ")
    client = openai.AsyncOpenAI(base_url=f"{target.base_urls[MODEL]}/v1", api_key=api_key,
                                max_retries=0)  # fmt: skip
    warm_up = [
        Call(n % 2 == 0, PROMPTS[n % len(PROMPTS)], PLAIN_TOKENS, 0.0) for n in range(CLIENTS)
    ]
    await asyncio.gather(*(_call(client, call) for call in warm_up))  # not counted
    stop_at = time.monotonic() + BEFORE_S + AFTER_S

    async def client_loop(n: int) -> None:
        turn = n
        while time.monotonic() < stop_at:
            streamed = turn % 2 == 0
            call = Call(streamed, PROMPTS[(3 * n + turn) % len(PROMPTS)],
                        STREAM_TOKENS if streamed else PLAIN_TOKENS, time.monotonic())  # fmt: skip
            calls.append(call)
            await _call(client, call)
            turn += 1

    try:
        loops = [asyncio.create_task(client_loop(n)) for n in range(CLIENTS)]
        await asyncio.sleep(BEFORE_S)
        faults = engines.strike(calls)
        _, waiting = await asyncio.wait(loops, timeout=stop_at + DRAIN_S - time.monotonic())
        for loop in waiting:  # its request is left with no end: counted as still waiting
            loop.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
    finally:
        await client.close()
    healthy = next(name for name in engines.urls if name not in engines.faulted)
    expected = await _expected(engines.urls[healthy])
    return figures(target.name, calls, faults, expected)


def _keep(workdir: Path, key: str) -> Path:
    """The run's logs (not the NATS server's store), copied where they outlive it."""
    kept = KEPT / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{key}"
    shutil.copytree(workdir, kept, ignore=shutil.ignore_patterns("nats", "litellm"))
    return kept


def _log_notes(log: Path, run: ChaosFigures, wall: float) -> list[str]:
    """What our gateway's log says it did: streams resumed, replicas given up as hung."""
    resumed, lines = 0, []
    stopped = {f.replica: f.at + wall for f in run.faults if f.signal == "SIGSTOP"}
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        message = str(event.get("msg", ""))
        resumed += message.startswith("resuming a cut stream")
        node = event.get("node")
        if message.startswith("replica stopped answering") and node in stopped:
            after = datetime.fromisoformat(event["ts"]).timestamp() - stopped[node]
            lines.append(f"its watchdog gave {node} up {after:.1f} s after the SIGSTOP "
                         f"({event.get('requests')} requests waiting on it)")  # fmt: skip
    return [f"its log ({log.name}): {resumed} times 'resuming a cut stream'", *lines]


def chaos_run(key: str, workdir: Path) -> ChaosFigures:
    """One target in front of three fresh engines, through the faults."""
    with fleet(workdir) as engines:
        backends = Backends({MODEL: list(engines.urls.values())})
        with CHAOS_TARGETS[key](backends, workdir) as target:
            try:
                run = asyncio.run(_load(target, engines))
            finally:
                engines.release()  # before the target stops, so that it is not kept waiting
    log = workdir / "cic-gateway.log"
    if key == CIC and log.is_file():
        run.notes += _log_notes(log, run, engines.wall)
    return run


def run_chaos(workdir: Path, keys: list[str]) -> tuple[list[ChaosFigures], dict[str, Path]]:
    """Each target's chaos figures (skipped ones with the reason), and where its logs are."""
    runs, kept = [], {}
    for key in keys:
        print(f"chaos: {key} in front of {ENGINES} fresh engines, {CLIENTS} clients, faults "
              f"after {BEFORE_S:g} s ...", file=sys.stderr, flush=True)  # fmt: skip
        own = workdir / f"chaos-{key}"
        own.mkdir()
        try:
            runs.append(chaos_run(key, own))
        except (RuntimeError, OSError, httpx.HTTPError) as exc:  # ServerFailed, PeerUnavailable
            runs.append(ChaosFigures(key, skipped=(str(exc) or repr(exc))[:200]))
        kept[key] = _keep(own, key)
    return runs, kept


def describe() -> str:
    return (
        f"- chaos: {ENGINES} fresh simulator engines of one model behind each target (first "
        f"token after 20 ms, then every 10 ms); {CLIENTS} AsyncOpenAI clients (max_retries=0), "
        f"each alternating a chat stream of {STREAM_TOKENS} tokens and a non-streamed one of "
        f"{PLAIN_TOKENS}; after {BEFORE_S:g} s the engine with the most streams in flight "
        f"SIGKILLed and the next SIGSTOPped, load for {AFTER_S:g} s more, then up to "
        f"{DRAIN_S:g} s for what was in flight; our gateway's CIC_PROBE_AFTER at its "
        f"default, {PROBE_AFTER} s"
    )
