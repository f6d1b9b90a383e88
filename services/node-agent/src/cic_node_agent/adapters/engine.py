"""The engine as a child process: start it, probe it, read its metrics, stop it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import httpx

from cic_node_agent.domain.metrics import EngineFacts, parse_metrics

__all__ = ["EngineExited", "EngineProcess"]

log = logging.getLogger(__name__)


class EngineExited(Exception):
    """The engine process ended while we waited for it."""


class EngineProcess:
    """One engine process at a time; ``start`` after an exit starts a new one."""

    def __init__(self, argv: list[str], base_url: str, *, probe_timeout: float = 2.0) -> None:
        self._argv = argv
        self.base_url = base_url
        self._proc: asyncio.subprocess.Process | None = None
        self._http = httpx.AsyncClient(base_url=base_url, timeout=probe_timeout)

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(*self._argv)
        log.info("engine started", extra={"pid": self._proc.pid, "argv": self._argv[:4]})

    async def wait_ready(self, within: float) -> None:
        """Return once ``/health`` answers 200.

        Raises:
            EngineExited: the process ended first.
            TimeoutError: it did not answer within ``within`` seconds.
        """
        async with asyncio.timeout(within):
            while True:
                if self._proc is None or self._proc.returncode is not None:
                    raise EngineExited(f"engine exited with {self.returncode}")
                if await self.healthy():
                    return
                await asyncio.sleep(0.2)

    async def healthy(self) -> bool:
        try:
            response = await self._http.get("/health")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def facts(self) -> EngineFacts | None:
        """The engine's current load, or None when ``/metrics`` does not answer."""
        try:
            response = await self._http.get("/metrics")
        except httpx.HTTPError:
            return None
        return parse_metrics(response.text) if response.status_code == 200 else None

    async def wait(self) -> int:
        """Until the process exits; its return code."""
        assert self._proc is not None
        return await self._proc.wait()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.returncode

    async def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; a stopped engine is a no-op."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def close(self) -> None:
        await self.stop()
        await self._http.aclose()
