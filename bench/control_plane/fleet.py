"""A simulated fleet: nodes seeded in PostgreSQL, and their agents' heartbeats on NATS.

``seed`` writes ``deployments`` x ``per_deployment`` active nodes, every endpoint the
one engine the bench runs, each node with its own signing secret. ``publish`` (run as
its own process, so its work is not charged to the control plane) sends every node's
signed heartbeat once per ``interval`` seconds, evenly spread, and probes a sample of
nodes: it stamps a unique load figure into their heartbeats and times how long the
figure takes to show in the Redis replica table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import nats
from cic_common.events import Heartbeat, NodeSpec, encode
from cic_common.replicas import ReplicaTable
from cic_common.signing import SIGNATURE_HEADER, signature_header
from cic_common.streams import ensure_streams
from redis.asyncio import Redis

__all__ = ["node_ids", "seed"]

PROBES = 100
"""Nodes whose heartbeat-to-table latency is timed (one beat each per interval)."""


def node_ids(count: int, per_deployment: int) -> Iterator[tuple[str, str, str]]:
    """``(node id, deployment id, model)`` of the simulated fleet, in a fixed order."""
    for i in range(count):
        d = i // per_deployment
        yield f"nbench{i:06d}", f"dbench{d:04d}", f"bench/model-{d}"


def secret(node_id: str) -> str:
    return f"secret-{node_id}"


async def seed(dsn: str, count: int, per_deployment: int, endpoint: str) -> None:
    """Deployments held at their count and every node active, as after a calm day."""
    conn = await asyncpg.connect(dsn)
    try:
        deployments = sorted({(d, m) for _, d, m in node_ids(count, per_deployment)})
        await conn.copy_records_to_table(
            "deployments",
            records=[(d, d, m, per_deployment) for d, m in deployments],
            columns=["id", "name", "model", "replicas"],
        )
        now = datetime.now(UTC)
        settled = now - timedelta(hours=1)  # last changed long ago; ready (heartbeats due) now
        rows = []
        for node_id, dep, model in node_ids(count, per_deployment):
            spec = NodeSpec(model=model).model_dump_json()
            rows.append((node_id, dep, 1, "active", spec, "local", f"cic-local-{node_id}",
                         endpoint, settled, settled, now, settled, settled,
                         secret(node_id)))  # fmt: skip
        await conn.copy_records_to_table(
            "nodes",
            records=rows,
            columns=["id", "deployment_id", "generation", "status", "spec", "backend",
                     "cluster_name", "endpoint", "requested_at", "launched_at", "ready_at",
                     "command_sent_at", "updated_at", "secret"],
        )  # fmt: skip
    finally:
        await conn.close()


class Probe:
    """Times heartbeats of probe nodes until the table shows their stamp: one reader
    checks every pending probe in one pipeline each few milliseconds."""

    def __init__(self, table: ReplicaTable) -> None:
        self.table = table
        self.pending: dict[tuple[str, str], tuple[float, float]] = {}
        self.latencies: list[float] = []
        self.missed = 0

    async def watch(self, until: asyncio.Event) -> None:
        while not (until.is_set() and not self.pending):
            await asyncio.sleep(0.005)
            keys = list(self.pending)
            if not keys:
                continue
            found = await self.table.entries(keys)
            now = time.monotonic()
            for key, replica in zip(keys, found, strict=True):
                stamp, sent = self.pending[key]
                if replica is not None and replica.requests_waiting == stamp:
                    self.latencies.append(now - sent)
                    del self.pending[key]
                elif now - sent > 10.0:
                    self.missed += 1
                    del self.pending[key]


async def publish(args: argparse.Namespace) -> None:
    nc = await nats.connect(args.nats_url)
    await ensure_streams(nc.jetstream())
    redis = Redis.from_url(args.redis_url)
    probe = Probe(ReplicaTable(redis))
    done = asyncio.Event()
    watcher = asyncio.create_task(probe.watch(done))
    fleet = list(node_ids(args.nodes, args.per_deployment))
    probes = {n for n, _, _ in fleet[:: max(1, len(fleet) // PROBES)]}
    tick = 0.01
    per_tick = len(fleet) * tick / args.interval
    started = time.monotonic()
    sent = 0
    seq = 0
    measuring_from = started + args.warmup
    while (now := time.monotonic()) < started + args.warmup + args.duration:
        due = int((now - started) / tick * per_tick) - sent
        for _ in range(max(0, due)):
            node_id, _, model = fleet[sent % len(fleet)]
            seq += 1
            stamp = float(seq) if node_id in probes else 0.0
            beat = Heartbeat(node_id=node_id, seq=seq, requests_running=1.0,
                             requests_waiting=stamp)  # fmt: skip
            event_id, body = encode(beat, producer=f"node/{node_id}")
            subject = beat.subject()
            headers = {
                "Nats-Msg-Id": event_id,
                "Cic-Event-Type": beat.TYPE,
                SIGNATURE_HEADER: signature_header(secret(node_id), subject, body),
            }
            await nc.publish(subject, body, headers=headers)
            if stamp and now >= measuring_from:
                probe.pending[(model, node_id)] = (stamp, time.monotonic())
            sent += 1
        await asyncio.sleep(tick)
    done.set()
    await watcher
    elapsed = time.monotonic() - started
    json.dump({"sent": sent, "rate": sent / elapsed, "latencies": probe.latencies,
               "missed": probe.missed}, sys.stdout)  # fmt: skip
    await nc.drain()
    await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.control_plane.fleet")
    parser.add_argument("--nats-url", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--per-deployment", type=int, required=True)
    parser.add_argument("--interval", type=float, required=True)
    parser.add_argument("--warmup", type=float, required=True)
    parser.add_argument("--duration", type=float, required=True)
    asyncio.run(publish(parser.parse_args()))


if __name__ == "__main__":
    main()
