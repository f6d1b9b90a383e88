"""The control plane under a 10,000-node fleet: CPU, memory and heartbeat latency.

Run from the repository root::

    uv run python -m bench.control_plane [--nodes 10000] [--interval 10] [--duration 60]

Every service runs as its own process on real NATS (a private server), PostgreSQL and
Redis (those ``make up`` uses, or embedded ones). The fleet is simulated: its nodes are
rows in PostgreSQL, all active, whose endpoints are one simulator engine, and a separate
process publishes their signed heartbeats (``fleet``). Health polls every engine each
``--poll-interval`` seconds as in production. The provisioner has no backends, so
nothing is launched. Printed: each service's CPU (share of one core over the measured
window) and resident memory, the heartbeat-to-replica-table latency, and a reconciler
pass over as many clusters as there are nodes, beside the bare read of the node table
it needs (the baseline: the ratio is what the pass adds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import nats
from cic_common.db import create_pool, migrate
from cic_common.processes import free_port
from cic_common.streams import stream_for
from cic_local.embedded import stop_pid
from cic_local.infra import PrivateNats, create_database, drop_database, ensure_infra
from cic_local.platform import Platform, ServiceSpec
from cic_node_agent.domain.engines import EngineLaunch, engine_command
from redis.asyncio import Redis

from .fleet import seed
from .procs import Usage, usage
from .reconcile import reconcile_pass

ROOT = Path(__file__).resolve().parents[2]
BARE = "bare subscriber (baseline)"
DATABASE = f"cic_bench_control_plane_{os.getpid()}"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.control_plane",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--per-deployment", type=int, default=100)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between beats")
    parser.add_argument("--poll-interval", type=float, default=30.0, help="health's polls")
    parser.add_argument("--check-interval", type=float, default=5.0, help="health's passes")
    parser.add_argument("--warmup", type=float, default=40.0, help="seconds not measured")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds measured")
    return parser.parse_args(argv)


def services(args: argparse.Namespace, gateway_port: int) -> tuple[ServiceSpec, ...]:
    return (
        ServiceSpec("provisioner", "cic_provisioner", {"CIC_BACKENDS": "[]"}),
        ServiceSpec("scheduler", "cic_scheduler"),
        ServiceSpec(
            "health",
            "cic_health",
            {
                "CIC_POLL_INTERVAL": str(args.poll_interval),
                "CIC_CHECK_INTERVAL": str(args.check_interval),
            },
        ),
        # Nodes the fleet only pretends to run have no clusters: no ghost hunting here
        # (``reconcile_pass`` measures the reconciler against a full inventory instead).
        ServiceSpec("reconciler", "cic_reconciler", {"CIC_GHOST_GRACE": "86400"}),
        ServiceSpec("gateway", "cic_gateway", {"CIC_PORT": str(gateway_port)}),
    )


async def prepare(args: argparse.Namespace, nats_url: str) -> tuple[str, str, str]:
    infra = ensure_infra(
        ROOT / ".cic", nats_url=nats_url,
        postgres_url=os.environ.get("CIC_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432"),
        redis_url=os.environ.get("CIC_REDIS_URL", "redis://127.0.0.1:6379"),
    )  # fmt: skip
    await drop_database(infra.postgres_url, DATABASE)
    dsn = await create_database(infra.postgres_url, DATABASE)
    pool = await create_pool(dsn)
    await migrate(pool)
    await pool.close()
    redis_url = f"{infra.redis_url.rstrip('/')}/12"
    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    await redis.aclose()
    return infra.postgres_url, dsn, redis_url


def start_engine(port: int) -> subprocess.Popen[bytes]:
    launch = EngineLaunch("sim", "bench/model", "127.0.0.1", port, 2048)
    engine = subprocess.Popen(engine_command(sys.executable, launch), start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return engine
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the simulator engine did not start")


async def health_state(dsn: str, nats_url: str) -> tuple[dict[str, int], int]:
    """Node statuses after the run, and heartbeats health has not consumed yet."""
    conn = await asyncpg.connect(dsn)
    statuses = dict(await conn.fetch("SELECT status, count(*) FROM nodes GROUP BY status"))
    await conn.close()
    nc = await nats.connect(nats_url)
    info = await nc.jetstream().consumer_info(stream_for("cic.heartbeat.x"), "health-heartbeats")
    await nc.drain()
    return statuses, info.num_pending + info.num_ack_pending


def table(rows: list[tuple[str, Usage]], window: float) -> str:
    lines = ["| process | CPU (% of one core) | of which kernel | RSS (MB) | peak RSS (MB) |",
             "|---|---:|---:|---:|---:|"]  # fmt: skip
    for name, u in rows:
        lines.append(f"| {name} | {100 * u.cpu_seconds / window:.1f} "
                     f"| {100 * u.system_seconds / window:.1f} | {u.rss_mb:.0f} "
                     f"| {u.peak_mb:.0f} |")  # fmt: skip
    return "\n".join(lines)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    with tempfile.TemporaryDirectory(prefix="cic-bench-") as workdir:
        private = PrivateNats(Path(workdir))
        private.start()
        try:
            run(args, Path(workdir), private)
        finally:
            private.stop()


def run(args: argparse.Namespace, workdir: Path, private: PrivateNats) -> None:
    server_url, dsn, redis_url = asyncio.run(prepare(args, private.url))
    try:
        measure(args, workdir, private, dsn, redis_url)
    finally:
        asyncio.run(drop_database(server_url, DATABASE))


def measure(
    args: argparse.Namespace, workdir: Path, private: PrivateNats, dsn: str, redis_url: str
) -> None:
    engine_port, gateway_port = free_port(), free_port()
    engine = start_engine(engine_port)
    asyncio.run(seed(dsn, args.nodes, args.per_deployment, f"http://127.0.0.1:{engine_port}"))
    env = {"CIC_NATS_URL": private.url, "CIC_POSTGRES_DSN": dsn, "CIC_REDIS_URL": redis_url,
           "CIC_LOG_LEVEL": "WARNING"}  # fmt: skip
    platform = Platform(workdir, env, services(args, gateway_port))
    platform.start()
    try:
        publisher = subprocess.Popen(
            [sys.executable, "-m", "bench.control_plane.fleet", "--nats-url", private.url,
             "--redis-url", redis_url, "--nodes", str(args.nodes), "--per-deployment",
             str(args.per_deployment), "--interval", str(args.interval), "--warmup",
             str(args.warmup), "--duration", str(args.duration)],
            stdout=subprocess.PIPE, cwd=ROOT,
        )  # fmt: skip
        bare = subprocess.Popen(
            [sys.executable, "-m", "bench.control_plane.bare", "--nats-url", private.url],
            stdout=subprocess.PIPE, cwd=ROOT,
        )  # fmt: skip
        pids = {**{n: p for n, p in platform.running().items() if p}, "nats-server": private.pid,
                BARE: bare.pid}  # fmt: skip
        time.sleep(args.warmup)
        before = {name: usage(pid) for name, pid in pids.items() if pid}
        started = time.monotonic()
        peaks: dict[str, float] = {}
        while publisher.poll() is None:
            for name, pid in pids.items():
                if pid:
                    peaks[name] = max(peaks.get(name, 0.0), usage(pid).rss_mb)
            time.sleep(1)
        window = time.monotonic() - started
        after = {name: usage(pid) for name, pid in pids.items() if pid}
        out, _ = publisher.communicate()
        bare.terminate()
        bare_received = int(bare.communicate(timeout=30)[0] or 0)
        statuses, backlog = asyncio.run(health_state(dsn, private.url))
    finally:
        platform.stop()
        stop_pid(engine.pid)
        if bare.poll() is None:
            bare.kill()
    report = json.loads(out)
    rows = [(n, after[n].since(before[n], peaks.get(n, 0.0))) for n in after]
    control = [u for n, u in rows if n not in ("nats-server", BARE)]
    cpu = {n: u.cpu_seconds / window for n, u in rows}
    cp_rss = sum(u.rss_mb for u in control)
    lat = report["latencies"]
    clusters, pass_s, read_s = asyncio.run(reconcile_pass(dsn, private.url))
    print(f"- {args.nodes} nodes in {args.nodes // args.per_deployment} deployments, a "
          f"heartbeat each every {args.interval:g} s: {report['rate']:.0f} published/s; health "
          f"polls every engine every {args.poll_interval:g} s and judges every node every "
          f"{args.check_interval:g} s; measured over {window:.0f} s "
          f"after {args.warmup:g} s of warm-up")  # fmt: skip
    print()
    print(table(rows, window))
    cp_cpu, cp_sys = (sum(getattr(u, f) for u in control) / window
                      for f in ("cpu_seconds", "system_seconds"))  # fmt: skip
    print(f"| control plane (5 services) | {cp_cpu:.1%} | {cp_sys:.1%} | {cp_rss:.0f} | |")
    print()
    print(f"- heartbeat to replica table: p50 {1000 * percentile(lat, 0.5):.0f} ms, "
          f"p99 {1000 * percentile(lat, 0.99):.0f} ms, max {1000 * max(lat, default=0):.0f} ms "
          f"over {len(lat)} probes ({report['missed']} not seen within 10 s)")  # fmt: skip
    print(f"- health used {cpu['health'] / cpu[BARE]:.1f}x the CPU of the baseline, a bare "
          f"subscriber that received the same {bare_received} heartbeats and did nothing "
          "with them")  # fmt: skip
    print(f"- after the run: nodes {statuses}; heartbeats not yet consumed: {backlog}")
    print(
        f"- reconciler pass over {clusters} clusters: {pass_s:.2f} s (median of 3); "
        f"reading the node table alone: {read_s:.2f} s ({pass_s / read_s:.1f}x)"
    )
    print(f"- date {datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
