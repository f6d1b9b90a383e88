"""Requests per second one simulator process serves, against a bare ASGI hello-world.

Both servers run as real processes on uvicorn (same loop and HTTP parser: uvloop and
httptools when installed) and are driven by the same load generator, ``wrk``, with a Lua
script that POSTs the same small JSON body; the simulator answers it as a non-streamed
completion of 8 tokens with its latency model at zero. The table gives each rate, the
median and 99th-percentile latency and the ratio to the bare baseline (machines here are
noisy: compare ratios, not rates). The simulator must serve at least ``TARGET`` requests/s
of small non-streamed completions, so it never bounds a gateway benchmark.

Run from the repository root::

    .venv/bin/python bench/sim_throughput.py [--duration 10] [--connections 32]

which runs, per row, ``wrk -t1 -c32 -d10s --latency -s <tmp>/post.lua <url>`` after a
2 s warm-up with the same command.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cic_common.processes import free_port

TARGET = 2000.0
"""Requests/s of small non-streamed completions one simulator must serve."""

MODEL = "bench-model"
PROMPT = '"prompt": "the quick brown fox jumps over the lazy dog"'
COMPLETION = f'{{"model": "{MODEL}", {PROMPT}, "max_tokens": 8}}'
CHAT = (
    f'{{"model": "{MODEL}", "max_tokens": 8,'
    ' "messages": [{"role": "user", "content": "the quick brown fox jumps"}]}'
)
STREAM = f'{{"model": "{MODEL}", {PROMPT}, "max_tokens": 8, "stream": true}}'
EMBEDDING = f'{{"model": "{MODEL}", "input": "the quick brown fox jumps over the lazy dog"}}'

BASELINE = """
import uvicorn

BODY = b'{"ok":true}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"11")]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


uvicorn.run(app, host="127.0.0.1", port=int(__import__("sys").argv[1]),
            log_level="warning", access_log=False)
"""

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open("{body}"):read("*a")
"""


@dataclass(frozen=True)
class Result:
    rate: float
    p50_ms: float
    p99_ms: float
    failed: int


@contextmanager
def server(argv: list[str], probe: str) -> Iterator[None]:
    """Starts ``argv``, waits until ``probe`` answers, and stops it at the end."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                why = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"{argv} exited: {why}")
            try:
                with urllib.request.urlopen(probe, timeout=1):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{argv} did not answer {probe}") from None
                time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _milliseconds(output: str, percentile: str) -> float:
    match = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    if not match:
        return float("nan")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]
    return float(match.group(1)) * scale


def wrk(url: str, body: str, workdir: Path, duration: int, connections: int) -> Result:
    """One ``wrk`` run POSTing ``body`` (after a warm-up run): rate, latencies, failures."""
    (workdir / "body.json").write_text(body)
    script = workdir / "post.lua"
    script.write_text(LUA.format(body=workdir / "body.json"))

    def run(seconds: int) -> str:
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
                "-s", str(script), url]  # fmt: skip
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout

    run(2)
    output = run(duration)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    failed = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       output)  # fmt: skip
    return Result(
        rate=float(rate.group(1)) if rate else 0.0,
        p50_ms=_milliseconds(output, "50"),
        p99_ms=_milliseconds(output, "99"),
        failed=(int(failed.group(1)) if failed else 0)
        + (sum(int(n) for n in errors.groups()) if errors else 0),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per row")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    rows: list[tuple[str, Result]] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)

        def measure(label: str, url: str, body: str) -> None:
            rows.append((label, wrk(url, body, workdir, args.duration, args.connections)))

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with server([sys.executable, "-c", BASELINE, str(port)], f"{base}/"):
            measure("baseline: bare ASGI hello-world", f"{base}/", COMPLETION)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        sim = [sys.executable, "-m", "cic_node_agent.engines.sim", "--port", str(port),
               "--model", MODEL]  # fmt: skip
        with server(sim, f"{base}/health"):
            measure("sim: completion, 8 tokens", f"{base}/v1/completions", COMPLETION)
            measure("sim: chat completion, 8 tokens", f"{base}/v1/chat/completions", CHAT)
            measure("sim: completion, 8 tokens, streamed", f"{base}/v1/completions", STREAM)
            measure("sim: embedding, 64 dimensions", f"{base}/v1/embeddings", EMBEDDING)
    baseline = rows[0][1].rate
    print(f"wrk -t1 -c{args.connections} -d{args.duration}s, one server process each\n")
    print(f"| {'server, request':38} | {'req/s':>7} | {'p50 ms':>6} | {'p99 ms':>6} "
          f"| {'vs bare':>7} | {'failed':>6} |")  # fmt: skip
    print(f"|{'-' * 40}|{'-' * 9}|{'-' * 8}|{'-' * 8}|{'-' * 9}|{'-' * 8}|")
    for label, result in rows:
        print(f"| {label:38} | {result.rate:7.0f} | {result.p50_ms:6.2f} | {result.p99_ms:6.2f} "
              f"| {result.rate / baseline:7.2f} | {result.failed:6d} |")  # fmt: skip
    sim_rate = rows[1][1].rate
    verdict = "meets" if sim_rate >= TARGET and rows[1][1].failed == 0 else "MISSES"
    print(f"\nnon-streamed completions: {sim_rate:.0f} req/s, {verdict} the {TARGET:.0f} target")


if __name__ == "__main__":
    main()
