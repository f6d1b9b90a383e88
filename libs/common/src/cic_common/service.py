"""Running a service process: settings, logging, tracing, signals, and orderly shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol

from cic_common.logs import setup_logging
from cic_common.settings import CommonSettings
from cic_common.telemetry import setup_tracing

__all__ = ["Part", "run", "run_service", "serve", "wait_for_stop"]

log = logging.getLogger(__name__)


async def wait_for_stop() -> None:
    """Return on SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def run_service(
    name: str, settings: CommonSettings, main: Callable[[], Coroutine[Any, Any, None]]
) -> None:
    """Set up logging and tracing, then run ``main`` until it returns.

    ``main`` is expected to call ``wait_for_stop()`` and shut its parts down in order.
    """
    setup_logging(name, settings.instance_id, settings.log_level, settings.log_format)
    setup_tracing(name, settings.otel_exporter)
    log.info("starting", extra={"nats": settings.nats_url})
    with contextlib.suppress(KeyboardInterrupt):  # SIGINT before handlers were installed
        run(main())
    log.info("stopped")


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop where it is installed (libuv's event loop: a fraction of
    the CPU of asyncio's own per socket event, which matters for health's thousands of
    polls and heartbeats a second), else on asyncio's."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


class Part(Protocol):
    """Something a service runs until told to stop: a consumer, a loop, a server."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...


async def serve(parts: Sequence[Part], stopped: Awaitable[None] | None = None) -> None:
    """Run ``parts`` until a stop signal (or ``stopped``), then stop them and wait.

    A part that fails brings the whole process down (non-zero exit), so a supervisor or
    an orchestrator restarts it rather than leaving it half alive.
    """
    tasks = [asyncio.create_task(p.run(), name=type(p).__name__) for p in parts]
    stop_task = asyncio.ensure_future(stopped if stopped is not None else wait_for_stop())
    done, _ = await asyncio.wait([stop_task, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for part in parts:
        part.stop()
    stop_task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    crashed = [t for t in done if t is not stop_task]
    if failures or crashed:
        for failure in failures:
            log.error("part failed", exc_info=failure)
        raise SystemExit(1)
