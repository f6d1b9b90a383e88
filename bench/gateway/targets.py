"""The simulator backends, and what a target is: where to send requests, and which
process to charge for them.

Two sets of three simulator engines serve two models: ``bench-fast`` answers at once
(no latency model: a proxy's cost is all that varies between targets), and
``bench-stream`` streams like a small model on a GPU (a first token after 20 ms, then
one every 10 ms), on which time to first token is compared. Every target serves both,
spread over its three engines, but the direct one, which is the first engine of each.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cic_common.processes import free_port

from .procs import serve

__all__ = [
    "FAST",
    "STREAM",
    "Backends",
    "Launcher",
    "PeerUnavailable",
    "Target",
    "backends",
    "chat_body",
    "direct",
]

FAST = "bench-fast"
STREAM = "bench-stream"
ENGINES = 3
STREAMING = ["--ttft-overhead", "0.02", "--token-delay", "0.01"]
"""The streaming engines' latency model: 20 ms before the first token, then 10 ms each."""


def chat_body(model: str, *, stream: bool = False, max_tokens: int = 8) -> str:
    """A small chat completion request (the JSON wrk and the TTFT client both send)."""
    flag = ', "stream": true' if stream else ""
    return (
        f'{{"model": "{model}", "max_tokens": {max_tokens}{flag},'
        ' "messages": [{"role": "user", "content": "the quick brown fox jumps"}]}'
    )


@dataclass(frozen=True)
class Backends:
    """Base URLs of the engines serving each model."""

    engines: dict[str, list[str]]


@dataclass(frozen=True)
class Target:
    """Something that answers ``/v1/chat/completions`` for both models."""

    name: str
    base_urls: dict[str, str]
    """Model -> base URL (``http://host:port``)."""
    pid: int | None
    """The process charged for the ``bench-fast`` requests (None: nothing in between)."""
    headers: dict[str, str] = field(default_factory=dict)
    """Sent with every request (the API key)."""
    note: str = ""
    helpers: Callable[[], dict[str, list[int]]] | None = None
    """The processes of the target's own infrastructure, by name (asked after the warm-up,
    when its connection pools are full): their CPU is reported beside its own."""
    spread: tuple[str, ...] = ()
    """Base URLs wrk spreads its load over itself, a thread each (the direct path: the
    same engines the proxies share, each as busy as behind a proxy)."""

    def url(self, model: str) -> str:
        return f"{self.base_urls[model]}/v1/chat/completions"


class PeerUnavailable(RuntimeError):
    """A target could not be installed or started; the table says why and goes on."""


Launcher = Callable[[Backends, Path], AbstractContextManager[Target]]
"""Starts a target in front of the backends (logs and files in the work directory)."""


@contextmanager
def backends(workdir: Path) -> Iterator[Backends]:
    """Both sets of engines, each its own process, until the end of the block."""
    engines: dict[str, list[str]] = {FAST: [], STREAM: []}
    with ExitStack() as stack:
        for model, latency in ((FAST, []), (STREAM, STREAMING)):
            for i in range(ENGINES):
                port = free_port()
                argv = [sys.executable, "-m", "cic_node_agent.engines.sim", "--port", str(port),
                        "--model", model, *latency]  # fmt: skip
                base = f"http://127.0.0.1:{port}"
                stack.enter_context(serve(argv, f"{base}/health", workdir / f"{model}-{i}.log"))
                engines[model].append(base)
        yield Backends(engines)


@contextmanager
def direct(backends: Backends, _: Path) -> Iterator[Target]:
    """The baseline: straight to the engines, wrk spreading the load over them itself
    (streams, for the TTFT, go to the first engine of their model)."""
    yield Target(
        f"direct (wrk spread over the {ENGINES} engines)",
        {model: urls[0] for model, urls in backends.engines.items()},
        pid=None,
        spread=tuple(backends.engines[FAST]),
    )
