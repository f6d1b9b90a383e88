"""Our gateway against vLLM's router and LiteLLM's proxy, on the same simulator engines.

Run from the repository root::

    uv run --frozen --no-sync python -m bench.gateway [--duration 10] [--only cic,direct]
        [--chaos] [--profile]

Six simulator engines run for the whole benchmark (three answering at once, three
streaming with a realistic latency model: see ``targets``); the targets, one at a time
and alone on the machine beside the engines, are

- direct: the first engine itself, the baseline;
- cic: our gateway with authentication, rate limits and metering (see ``cic``);
- vllm-router: vLLM's Rust router, round robin; the RPS ratios are against it;
- litellm: LiteLLM's proxy (both installed on first use: see ``peers``).

For each: its peak rate (``wrk -t1``, 64 connections, after a 2 s warm-up) and the CPU
time its process tree spent per request meanwhile (for ours, that of the NATS server and
PostgreSQL backends it meters through too, on a line of its own); its latency paced at
half of our gateway's peak rate (the first target measured sets the pace: ours when it
runs), once it has worked off what it queued at peak, less the direct path's at the same
rate; and the overhead it adds to the time to first token of streams, against the
direct path measured alongside. On two cores the load generator, the engines and the
proxy share the CPU: compare ratios, not rates.

With ``--profile``, py-spy samples our gateway during its peak run, and the functions
that held its CPU longest are listed after the table (see ``profile``).

Then, chaos (``--chaos``, and last in the full run): engines killed and hung under load
from the ``openai`` client, behind our gateway and vLLM's router: requests failed,
streams cut and resumed (see ``chaos``). ``--chaos`` alone runs only that; with
``--only``, those targets first.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from . import procs
from .chaos import CHAOS_TARGETS, describe, run_chaos
from .chaos_figures import ChaosFigures, chaos_goals, chaos_table
from .cic import gateway
from .load import pacing, wrk
from .peers import litellm, vllm_router
from .procs import PROXY_CORE, ServerFailed, settle, tree_cpu_seconds
from .profile import profile_lines, sampled
from .report import CIC, DIRECT, LITELLM, VLLM_ROUTER, Row, goals, helper_lines, table, ttft_lines
from .targets import FAST, STREAM, Backends, Launcher, Target, backends, chat_body
from .targets import direct as direct_target
from .ttft import measure_ttft

LAUNCHERS: dict[str, Launcher] = {
    CIC: gateway,  # first: its peak sets the pace of every paced run
    DIRECT: direct_target,
    VLLM_ROUTER: vllm_router,
    LITELLM: litellm,
}
WARMUP_SECONDS = 2
PROFILE = Path(__file__).resolve().parents[2] / ".cic" / "profiles" / "cic-gateway.collapsed"
"""py-spy's collapsed stacks of the last ``--profile`` run (for a flame graph)."""


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gateway",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds of each wrk run, peak and paced (default 10)")  # fmt: skip
    every = ",".join(LAUNCHERS)
    parser.add_argument("--only", default=None,
                        help=f"targets to measure, comma-separated (default {every})")  # fmt: skip
    parser.add_argument(
        "--chaos",
        action="store_true",
        help="measure failover under faults (alone unless --only is given)",
    )
    chaos = ",".join(CHAOS_TARGETS)
    parser.add_argument(
        "--chaos-targets",
        default=chaos,
        help=f"targets of the chaos run, comma-separated (default {chaos})",
    )
    parser.add_argument("--connections", type=int, default=64, help="wrk's, at peak")
    parser.add_argument("--gateway-workers", type=int, default=1,
                        help="our gateway's processes (CIC_WORKERS)")  # fmt: skip
    parser.add_argument("--pace", type=float, default=None,
                        help="req/s of the paced runs (default: half the first peak)")  # fmt: skip
    parser.add_argument("--no-rate-limit", action="store_true",
                        help="our gateway's key without a rate limit (no Redis call)")  # fmt: skip
    parser.add_argument("--profile", action="store_true",
                        help="py-spy our gateway at peak; list where its time goes")  # fmt: skip
    parser.add_argument("--isolate", action="store_true",
                        help="each proxy on a core of its own, all else on the others")  # fmt: skip
    parser.add_argument("--ttft-requests", type=int, default=300,
                        help="streams through each target (and as many direct)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.only is None:  # the full run, chaos included; or --chaos alone
        args.only, args.chaos = ("" if args.chaos else every), True
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(args.only) - set(LAUNCHERS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; choose among {list(LAUNCHERS)}")
    args.chaos_targets = [n.strip() for n in args.chaos_targets.split(",") if n.strip()]
    if set(args.chaos_targets) - set(CHAOS_TARGETS):
        parser.error(f"chaos targets are among {list(CHAOS_TARGETS)}")
    return args


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cpu_seconds(pids: list[int]) -> float:
    return sum(tree_cpu_seconds(pid) for pid in pids)


def measure_peak(row: Row, target: Target, workdir: Path, args: argparse.Namespace) -> None:
    """Flat out after a warm-up: the rate, and the CPU the target (and its helpers)
    spent per request; then wait until it has worked off whatever it queued."""
    url, body = target.url(FAST), chat_body(FAST)
    say(f"{target.name}: warm-up, then peak ({args.connections} connections) ...")
    wrk(
        url,
        body,
        target.headers,
        workdir,
        seconds=WARMUP_SECONDS,
        connections=args.connections,
        spread=target.spread,
    )
    charged = {target.name: [target.pid] if target.pid else []}
    charged |= target.helpers() if target.helpers else {}
    if args.isolate:  # its NATS, PostgreSQL and Redis are not on the proxy's host either
        for name, pids in charged.items():
            for pid in pids if name != target.name else []:
                procs.pin_tree(pid, procs.other_cores())
    before = {name: cpu_seconds(pids) for name, pids in charged.items()}
    if args.profile and row.key == CIC and target.pid:
        with sampled(target.pid, args.duration, PROFILE) as profile:
            row.peak = wrk(url, body, target.headers, workdir, seconds=args.duration,
                           connections=args.connections, spread=target.spread)  # fmt: skip
        row.profile = profile.stacks()
    else:
        row.peak = wrk(url, body, target.headers, workdir, seconds=args.duration,
                       connections=args.connections, spread=target.spread)  # fmt: skip
    spent = {name: 1000 * (cpu_seconds(pids) - before[name]) / max(1, row.peak.requests)
             for name, pids in charged.items() if pids}  # fmt: skip
    row.cpu_ms = spent.pop(target.name, None)
    row.helper_ms = spent
    row.busy_after_s = settle([pid for pids in charged.values() for pid in pids])


def measure_paced(
    row: Row, target: Target, workdir: Path, args: argparse.Namespace, rate: float
) -> None:
    connections, spacing = pacing(rate)
    say(f"{target.name}: paced at {rate:.0f} req/s ({connections} connections, "
        f"{spacing:.1f} ms apart) ...")  # fmt: skip
    row.paced = wrk(target.url(FAST), chat_body(FAST), target.headers, workdir,
                    seconds=args.duration, connections=connections, spacing_ms=spacing,
                    spread=target.spread)  # fmt: skip


def measure(
    key: str, backends: Backends, workdir: Path, args: argparse.Namespace, pace: float | None
) -> Row:
    """Start one target, take its figures, stop it. ``pace``: the paced run's rate
    (None: half of this target's own peak)."""
    with LAUNCHERS[key](backends, workdir) as target:
        if args.isolate and target.pid:
            procs.pin_proxy(target.pid)
        try:
            return _measured(key, target, backends, workdir, args, pace)
        finally:
            if args.isolate and target.helpers:  # the machine's servers, back as they were
                for pid in (pid for pids in target.helpers().values() for pid in pids):
                    procs.pin_tree(pid, procs.usable_cores())


def _measured(
    key: str,
    target: Target,
    backends: Backends,
    workdir: Path,
    args: argparse.Namespace,
    pace: float | None,
) -> Row:
    """One target's figures: peak, paced, and TTFT."""
    row = Row(key, target.name + (f" ({target.note})" if target.note else ""))
    measure_peak(row, target, workdir, args)
    assert row.peak is not None
    say(f"{target.name}: peak {row.peak.rate:.0f} req/s, quiet {row.busy_after_s:.1f} s "
        "after")  # fmt: skip
    measure_paced(row, target, workdir, args, pace or row.peak.rate / 2)
    if key != DIRECT:
        say(f"{target.name}: {args.ttft_requests} streams, and as many direct ...")
        row.ttft = measure_ttft(
            target.url(STREAM), f"{backends.engines[STREAM][0]}/v1/chat/completions",
            chat_body(STREAM, stream=True), target.headers, requests=args.ttft_requests,
        )  # fmt: skip
    return row


def run(args: argparse.Namespace, workdir: Path) -> tuple[list[Row], float | None]:
    """Every target chosen, in ``LAUNCHERS`` order; the rows and the paced rate."""
    rows: list[Row] = []
    pace: float | None = args.pace
    say("starting 6 simulator engines ...")
    with backends(workdir) as engines:
        for key in (k for k in LAUNCHERS if k in args.only):
            try:
                row = measure(key, engines, workdir, args, pace)
            except (RuntimeError, OSError, httpx.HTTPError) as exc:  # ServerFailed, PeerUnavailable
                log = f"\n{exc.tail}" if isinstance(exc, ServerFailed) else ""
                say(f"{key}: skipped: {exc}{log}")
                row = Row(key, key, skipped=(str(exc) or repr(exc))[:200])
            rows.append(row)
            if pace is None and row.peak is not None and row.peak.rate > 0:
                pace = row.peak.rate / 2
    order = [DIRECT, CIC, VLLM_ROUTER, LITELLM]
    return sorted(rows, key=lambda row: order.index(row.key)), pace


def print_chaos(runs: list[ChaosFigures], kept: dict[str, Path]) -> None:
    print(f"\n{describe()}\n")
    print(chaos_table(runs))
    print()
    for key, run_ in zip(kept, runs, strict=True):  # kept: every target, in order
        for line in chaos_goals(run_, ours=key == CIC):
            print(line)
    for key, path in kept.items():
        print(f"- chaos {key}: logs kept in {path}")


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    os.environ["CIC_WORKERS"] = str(args.gateway_workers)  # read by ``cic.gateway``
    if args.isolate:  # whatever this process starts inherits it
        procs.isolate_self()
    if args.no_rate_limit:
        os.environ["CIC_BENCH_NO_RATE_LIMIT"] = "1"  # read by ``cic.gateway`` too
    if args.only and shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    started, load_before = time.monotonic(), os.getloadavg()[0]
    rows: list[Row] = []
    pace: float | None = None
    runs: list[ChaosFigures] = []
    kept: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="cic-bench-gateway-") as tmp:
        if args.only:
            rows, pace = run(args, Path(tmp))
        if args.chaos:
            runs, kept = run_chaos(Path(tmp), args.chaos_targets)
    if rows:
        print_rows(rows, pace, args)
    if args.chaos:
        print_chaos(runs, kept)
    print(f"- date {datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} cores, load average "
          f"{load_before:.2f} before the run, {os.getloadavg()[0]:.2f} after, "
          f"{time.monotonic() - started:.0f} s in all")  # fmt: skip


def print_rows(rows: list[Row], pace: float | None, args: argparse.Namespace) -> None:
    pace_text = f"{pace:.0f} req/s" if pace else "—"
    pace_text += " (as asked)" if args.pace else " (half the first target's peak)"
    print(f"\n- chat completions of 8 tokens; peak: wrk -t1 -c{args.connections} "
          f"-d{args.duration:g}s after {WARMUP_SECONDS} s of warm-up; paced: "
          f"{pace_text} for {args.duration:g} s; TTFT: "
          f"{args.ttft_requests} streams of 8 tokens (first after 20 ms, then every 10 ms), "
          "4 at a time, interleaved with as many direct")  # fmt: skip
    print(
        "- 3 simulator engines per model behind every target; direct: wrk spreads the load "
        "over them itself"
    )
    if args.isolate:
        print(f"- each proxy alone on core {PROXY_CORE}; engines, wrk and the bench on the rest")
    print()
    print(table(rows))
    print()
    for line in [*helper_lines(rows), *ttft_lines(rows), *goals(rows)]:
        print(line)
    for row in rows:
        if row.profile is not None:
            print("\n".join(profile_lines(row.profile)))
            print(f"- py-spy's stacks: {PROFILE.relative_to(PROFILE.parents[2])}")


if __name__ == "__main__":
    main()
