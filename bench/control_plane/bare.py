"""The baseline beside health: a bare nats-py subscriber that receives every heartbeat
and does nothing with it (no decoding, no signature check, no store), on the same event
loop as the services, run as its own process for as long as the bench. Stop it with
SIGTERM; it prints how many it got."""

from __future__ import annotations

import argparse
import asyncio
import signal

import nats
from cic_common.service import run


async def receive(url: str) -> int:
    nc = await nats.connect(url)
    received = 0

    async def count(msg: object) -> None:
        nonlocal received
        received += 1

    await nc.subscribe("cic.heartbeat.>", cb=count)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await nc.drain()
    return received


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.control_plane.bare")
    parser.add_argument("--nats-url", required=True)
    received: list[int] = []

    async def main() -> None:
        received.append(await receive(parser.parse_args().nats_url))

    run(main())
    print(received[0], flush=True)


if __name__ == "__main__":
    main()
