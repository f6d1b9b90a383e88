"""``cic-local``: the whole platform on this machine, with a demo deployment.

``up`` starts (or reuses) NATS, PostgreSQL and Redis, the five control-plane
services, and a demo deployment; it returns once a completion has been answered.
``down`` stops everything it started. State lives in ``$CIC_STATE_DIR`` (``.cic``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from cic_gateway.domain.keys import generate_key

from cic_local.demo import prepare_demo
from cic_local.infra import create_database, ensure_infra, stop_infra
from cic_local.platform import Platform, stop_nodes, terminate_nodes

DATABASE = "cic"


def _state_dir() -> Path:
    return Path(os.environ.get("CIC_STATE_DIR", ".cic")).resolve()


def _admin_key(state_dir: Path) -> str:
    path = state_dir / "admin.key"
    if path.exists():
        return path.read_text().strip()
    key, _ = generate_key()
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


def _catalogs() -> dict[str, str]:
    """Prices come from SkyPilot's catalogs in ``~/.sky``; a checkout next to the team's
    shared data reads the catalog kept there instead."""
    if "CIC_CATALOG_DIR" in os.environ:
        return {}
    shared = Path.cwd().parent / "shared" / "catalogs" / "v8"
    return {"CIC_CATALOG_DIR": str(shared)} if shared.is_dir() else {}


def up(args: argparse.Namespace) -> int:
    started = time.monotonic()
    state_dir = _state_dir()
    state_dir.mkdir(parents=True, exist_ok=True)
    infra = ensure_infra(
        state_dir,
        nats_url=os.environ.get("CIC_NATS_URL", "nats://127.0.0.1:4222"),
        postgres_url=os.environ.get("CIC_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432"),
        redis_url=os.environ.get("CIC_REDIS_URL", "redis://127.0.0.1:6379"),
    )
    dsn = asyncio.run(create_database(infra.postgres_url, DATABASE))
    admin_key = _admin_key(state_dir)
    port = int(os.environ.get("CIC_GATEWAY_PORT", "8080"))
    gateway_url = f"http://127.0.0.1:{port}"
    platform = Platform(
        state_dir,
        {
            "CIC_NATS_URL": infra.nats_url,
            "CIC_POSTGRES_DSN": dsn,
            "CIC_REDIS_URL": infra.redis_url,
            "CIC_ADMIN_KEY": admin_key,
            "CIC_PORT": str(port),
            **_catalogs(),
        },
    )
    platform.start()
    (state_dir / "nats.url").write_text(infra.nats_url)
    try:
        demo = asyncio.run(prepare_demo(gateway_url, admin_key, state_dir, replicas=args.replicas))
    except TimeoutError:
        print("the demo did not answer in time; service logs:", file=sys.stderr)
        for name in platform.running():
            print(f"--- {name}\n{platform.log_tail(name)}", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - started
    embedded = ", ".join(infra.started) or "none (reused the running servers)"
    print(
        f"""CIC is up in {elapsed:.1f} s; embedded servers started: {embedded}.
The demo deployment answered: {demo.answer!r}

Try it:
  curl -s {gateway_url}/v1/chat/completions \\
    -H "Authorization: Bearer $(cat {state_dir}/user.key)" \\
    -H 'Content-Type: application/json' \\
    -d '{{"model": "demo", "messages": [{{"role": "user", "content": "Hello"}}]}}'

Admin key: {state_dir}/admin.key   Logs: {state_dir}/logs/   Stop: make down"""
    )
    if args.foreground:
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return down(args)
    return 0


def down(args: argparse.Namespace) -> int:
    state_dir = _state_dir()
    platform = Platform(state_dir, {})
    # The scheduler goes first, or it would replace the nodes stopped below.
    services = platform.stop(only={"gateway", "scheduler", "reconciler"})
    if platform.pid("provisioner") is not None and (state_dir / "nats.url").exists():
        # Through the provisioner, so our records say terminated and the next `up`
        # starts from the truth instead of routing to nodes that are gone.
        nats_url = (state_dir / "nats.url").read_text().strip()
        asyncio.run(terminate_nodes(nats_url, state_dir))
    services += platform.stop()
    nodes = stop_nodes(state_dir)
    infra = stop_infra(state_dir)
    print(f"stopped services: {services or 'none'}; nodes: {nodes or 'none'}; "
          f"embedded servers: {infra or 'none'}")  # fmt: skip
    return 0


def status(args: argparse.Namespace) -> int:
    for name, pid in Platform(_state_dir(), {}).running().items():
        print(f"{name:12} {'running, pid ' + str(pid) if pid else 'stopped'}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="cic-local", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start everything and the demo deployment")
    start.add_argument("--replicas", type=int, default=1, help="replicas of the demo")
    start.add_argument("--foreground", action="store_true", help="stay; Ctrl-C stops all")
    start.set_defaults(run=up)
    commands.add_parser("down", help="stop everything").set_defaults(run=down)
    commands.add_parser("status", help="which services run").set_defaults(run=status)
    args = parser.parse_args()
    sys.exit(args.run(args))


if __name__ == "__main__":
    main()
