"""The gateway benchmark's load and its placement: wrk spread over several servers, a
process tree pinned to a core."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench.gateway.load import lua_script, wrk
from bench.gateway.procs import pin_tree


def test_a_spread_script_sends_each_wrk_thread_to_a_server_of_its_own() -> None:
    script = lua_script(Path("/b.json"), {}, None, ["http://127.0.0.1:7001", "http://h:7002"])
    assert 'local servers = {{"127.0.0.1", "7001"}, {"h", "7002"}}' in script
    assert "function setup(thread)" in script
    assert "function setup" not in lua_script(Path("/b.json"), {}, None)


@pytest.fixture
def counting_servers() -> Iterator[tuple[list[str], Counter[int]]]:
    """Two HTTP servers answering any POST; how many each answered, by port."""
    hits: Counter[int] = Counter()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            hits[int(self.connection.getsockname()[1])] += 1
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *_: object) -> None:
            pass

    servers = [ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield [f"http://127.0.0.1:{s.server_address[1]}" for s in servers], hits
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (apt-get install wrk)")
def test_wrk_spread_over_two_servers_loads_both(
    counting_servers: tuple[list[str], Counter[int]], tmp_path: Path
) -> None:
    urls, hits = counting_servers
    result = wrk(f"{urls[0]}/v1/chat/completions", "{}", {}, tmp_path, seconds=1,
                 connections=2, spacing_ms=20, spread=urls)  # fmt: skip
    assert result.failed == 0
    ports = [int(url.rsplit(":", 1)[1]) for url in urls]
    assert all(hits[port] > 0 for port in ports), hits
    assert sum(hits.values()) >= result.requests


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux only")
def test_pinning_a_tree_pins_the_process_and_its_children() -> None:
    code = "import subprocess, sys, time; subprocess.Popen(['sleep', '30']); time.sleep(30)"
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        children: list[int] = []
        for _ in range(200):  # the child appears once the interpreter is up
            children = [int(pid) for pid in _children(parent.pid)]
            if children:
                break
            threading.Event().wait(0.05)
        assert children, "the child never started"
        assert pin_tree(parent.pid, {0}) >= 2
        assert os.sched_getaffinity(parent.pid) == {0}
        assert os.sched_getaffinity(children[0]) == {0}
    finally:
        for pid in _children(parent.pid):
            os.kill(int(pid), 9)
        parent.kill()
        parent.wait()


def _children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
