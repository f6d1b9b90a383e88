"""Fault switches for chaos tests: crash, hang, fail with 500s, slow down; set at start or live."""

from __future__ import annotations

import asyncio
import math
import os
import sys

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from cic_node_agent.engines.sim.protocol import describe, error_body

__all__ = ["ADMIN_PATH", "CRASH_EXIT_CODE", "FaultGate", "FaultSwitch", "Faults", "fails_at"]

ADMIN_PATH = "/sim/faults"
"""``GET`` the faults in force, ``POST`` a new set (what it leaves out is off); never faulted."""

CRASH_EXIT_CODE = 70
"""The status a crashed simulator exits with (``EX_SOFTWARE``)."""


class Faults(BaseModel):
    """What goes wrong; the default is nothing.

    Attributes:
        crash: exit on the next request (at once when set through ``/sim/faults``).
        hang: no request and no ``/health`` answers until cleared; running streams stall.
        error_rate: the share of completions and embeddings answered with a 500, spread
            evenly by request count (1.0: every one, 0.25: every fourth).
        slowdown: the multiplier of every modelled latency.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    crash: bool = False
    hang: bool = False
    error_rate: float = Field(0.0, ge=0.0, le=1.0)
    slowdown: float = Field(1.0, gt=0.0)


def fails_at(count: int, rate: float) -> bool:
    """Whether the ``count``-th request (from 1) fails when ``rate`` of them should.

    Failures are spread evenly and deterministically: the count crosses a multiple of
    ``1 / rate`` (a tiny epsilon absorbs float error, so 0.1 fails exactly every tenth).
    """
    if rate <= 0 or count < 1:
        return False
    return math.floor(count * rate + 1e-9) > math.floor((count - 1) * rate + 1e-9)


def _crash() -> None:
    sys.stderr.write("cic-sim: crash fault: exiting\n")
    sys.stderr.flush()
    os._exit(CRASH_EXIT_CODE)


class FaultSwitch:
    """The faults in force and what they need at run time: the hang's latch, the count."""

    def __init__(self, faults: Faults | None = None) -> None:
        self.faults = Faults()
        self._released = asyncio.Event()
        self._count = 0
        self.set(faults or Faults())

    def set(self, faults: Faults) -> None:
        """Puts ``faults`` in force; the 500s count starts again, a cleared hang lets go."""
        self.faults = faults
        self._count = 0
        if faults.hang:
            self._released.clear()
        else:
            self._released.set()

    @property
    def slowdown(self) -> float:
        return self.faults.slowdown

    async def hold(self) -> None:
        """Returns at once, or, while hanging, when the hang is cleared."""
        while self.faults.hang:
            await self._released.wait()

    def fail_next(self) -> bool:
        """Counts one completion or embedding; true if it must answer 500."""
        if not self.faults.error_rate:
            return False
        self._count += 1
        return fails_at(self._count, self.faults.error_rate)

    async def endpoint(self, request: Request) -> Response:
        """``/sim/faults``: the faults in force, after setting them on ``POST``."""
        if request.method == "POST":
            try:
                faults = Faults.model_validate_json(await request.body())
            except ValidationError as exc:
                message = describe(exc)
                return JSONResponse(error_body(400, message, "BadRequestError"), status_code=400)
            self.set(faults)
            if faults.crash:  # at once, yet after the answer is on its way
                return JSONResponse(faults.model_dump(), background=BackgroundTask(_crash))
        return JSONResponse(self.faults.model_dump())


class FaultGate:
    """ASGI middleware: every request but ``/sim/faults`` first meets the crash and hang."""

    def __init__(self, app: ASGIApp, switch: FaultSwitch) -> None:
        self.app = app
        self.switch = switch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != ADMIN_PATH:
            switch = self.switch
            if switch.faults.crash:
                _crash()
            if switch.faults.hang:
                await switch.hold()
        await self.app(scope, receive, send)
