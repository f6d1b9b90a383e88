"""Load from ``wrk``: flat out for the peak rate, or paced for latency at a given rate.

``wrk`` keeps every connection busy, so its rate is the server's peak. It cannot hold
a rate by itself (``wrk2`` can, but it is not packaged in Debian); its Lua hook
``delay()`` can, though: called before each request, it makes that connection wait so
many milliseconds. With ``c`` connections each waiting ``1000 * c / rate`` ms on
average between requests, the offered load is ``rate`` less the share of each cycle the
request itself takes, which stays small at the spacing chosen here (see :func:`pacing`);
the rate achieved is reported beside the latencies either way. The waits are drawn
uniformly around the mean so the connections do not fire in lockstep.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["WrkResult", "lua_script", "pacing", "parse_wrk", "wrk"]

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_PACED_SPACING_MS = 40.0
"""Mean time between two requests of one paced connection."""


@dataclass(frozen=True)
class WrkResult:
    """What one ``wrk --latency`` run reports, in numbers."""

    requests: int
    rate: float
    """Requests per second, failed ones included (``failed`` says how many)."""
    p50_ms: float
    p99_ms: float
    failed: int
    """Non-2xx answers plus socket errors (connect, read, write, timeout)."""


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def lua_script(
    body_file: Path,
    headers: Mapping[str, str],
    spacing_ms: float | None,
    spread: Sequence[str] = (),
) -> str:
    """A script that POSTs the JSON in ``body_file`` with ``headers``; with
    ``spacing_ms``, each connection waits that long on average before each request; with
    ``spread`` (base URLs), wrk's n-th thread sends to the n-th server."""
    lines = ['wrk.method = "POST"', 'wrk.headers["Content-Type"] = "application/json"']
    if spread:
        hosts = [urlsplit(url) for url in spread]
        pairs = ", ".join(f'{{{_lua_string(h.hostname or "")}, "{h.port}"}}' for h in hosts)
        lines += [
            f"local servers = {{{pairs}}}",
            "local started = 0",
            "function setup(thread)",
            "  local server = servers[started % #servers + 1]",
            "  started = started + 1",
            "  thread.addr = wrk.lookup(server[1], server[2])[1]",
            "end",
        ]
    lines += [f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()]
    lines.append(f"wrk.body = io.open({_lua_string(str(body_file))}):read('*a')")
    if spacing_ms is not None:
        lines += [
            f"local mean = {spacing_ms:.3f}",
            "function delay()",
            "  return math.floor(mean * (0.5 + math.random()) + 0.5)",
            "end",
        ]
    return "\n".join(lines) + "\n"


def pacing(rate: float) -> tuple[int, float]:
    """Connections and mean spacing (ms) to offer ``rate`` requests/s: enough connections
    that each waits about 40 ms between requests, so a request's own few milliseconds
    barely slow the pace, and between 2 and 64 of them."""
    connections = max(2, min(64, round(rate * _PACED_SPACING_MS / 1000)))
    return connections, 1000.0 * connections / rate


def _milliseconds(output: str, percentile: str) -> float:
    match = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
    return float(match.group(1)) * _UNITS_MS[match.group(2)] if match else float("nan")


def parse_wrk(output: str) -> WrkResult:
    """The figures of ``wrk --latency`` output; a figure it did not print is 0 (counts)
    or NaN (latencies).

    Raises:
        ValueError: the output has no request count (wrk failed before measuring).
    """
    total = re.search(r"^\s+(\d+) requests in ([\d.]+)(us|ms|s|m)", output, re.MULTILINE)
    if total is None:
        raise ValueError(f"not wrk output: {output[:200]!r}")
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return WrkResult(
        requests=int(total.group(1)),
        rate=float(rate.group(1)) if rate else 0.0,
        p50_ms=_milliseconds(output, "50"),
        p99_ms=_milliseconds(output, "99"),
        failed=(int(non_2xx.group(1)) if non_2xx else 0)
        + (sum(int(n) for n in errors.groups()) if errors else 0),
    )


def wrk(
    url: str,
    body: str,
    headers: Mapping[str, str],
    workdir: Path,
    *,
    seconds: float,
    connections: int,
    spacing_ms: float | None = None,
    spread: Sequence[str] = (),
) -> WrkResult:
    """One measured ``wrk`` run of ``seconds`` POSTing ``body`` to ``url``'s path: one
    thread, or one per server of ``spread`` (``connections`` shared among them)."""
    body_file = workdir / "body.json"
    body_file.write_text(body)
    script = workdir / "post.lua"
    script.write_text(lua_script(body_file, headers, spacing_ms, spread))
    threads = max(1, len(spread))
    argv = ["wrk", f"-t{threads}", f"-c{max(connections, threads)}",
            f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "10s", "-s", str(script),
            url]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return parse_wrk(done.stdout)
