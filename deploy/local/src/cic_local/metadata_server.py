"""A local cloud metadata service speaking the AWS, GCP and Azure preemption protocols.

It answers exactly as each cloud documents, so node agents and tests exercise the real
watcher code: AWS IMDSv2 (session token, ``spot/instance-action``, rebalance
recommendation), GCP ``instance/preempted`` with ``wait_for_change``, and Azure Scheduled
Events. ``POST /_control/notice`` schedules a preemption; ``POST /_control/reset`` clears.
Run one with ``python -m cic_local.metadata_server --port 8169``.

One server stands for many machines: everything under ``/vm/<name>/`` is the metadata
service of the machine ``name`` (made on first use), so each local node can be given a
metadata address of its own (``CIC_METADATA_URL=http://127.0.0.1:8169/vm/{node_id}``,
through the provisioner's ``CIC_NODE_ENV``) and warned alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

__all__ = ["Machines", "MetadataState", "create_app"]


class NoticeRequest(BaseModel):
    in_seconds: float = Field(120.0, ge=0, description="time from now to the stop")
    rebalance: bool = Field(False, description="AWS: only a rebalance recommendation")


@dataclass
class MetadataState:
    """What the fake instance knows; changed through the control endpoints."""

    vm_name: str = "cic-local-vm"
    deadline: datetime | None = None
    rebalance_at: datetime | None = None
    tokens: set[str] = field(default_factory=set)
    incarnation: int = 1
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        self.incarnation += 1
        self.changed.set()
        self.changed = asyncio.Event()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def create_app(state: MetadataState | None = None) -> FastAPI:
    app = FastAPI(title="cic local cloud metadata", docs_url=None, redoc_url=None)
    app.state.metadata = state = state or MetadataState()

    @app.post("/_control/notice")
    async def notice(body: NoticeRequest) -> dict[str, str]:
        moment = datetime.now(UTC) + timedelta(seconds=body.in_seconds)
        if body.rebalance:
            state.rebalance_at = datetime.now(UTC)
        else:
            state.deadline = moment
        state.notify()
        return {"deadline": _iso(moment)}

    @app.post("/_control/reset")
    async def reset() -> dict[str, str]:
        state.deadline = state.rebalance_at = None
        state.notify()
        return {"status": "reset"}

    # AWS IMDSv2 ------------------------------------------------------------------
    @app.put("/latest/api/token")
    async def aws_token(request: Request) -> Response:
        ttl = request.headers.get("x-aws-ec2-metadata-token-ttl-seconds", "")
        if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            return Response(status_code=400)
        token = secrets.token_urlsafe(24)
        state.tokens.add(token)
        return PlainTextResponse(token, headers={"x-aws-ec2-metadata-token-ttl-seconds": ttl})

    def aws_authorised(request: Request) -> bool:
        return request.headers.get("x-aws-ec2-metadata-token", "") in state.tokens

    @app.get("/latest/meta-data/spot/instance-action")
    async def aws_instance_action(request: Request) -> Response:
        if not aws_authorised(request):
            return Response(status_code=401)
        if state.deadline is None:
            return Response(status_code=404)
        return JSONResponse({"action": "terminate", "time": _iso(state.deadline)})

    @app.get("/latest/meta-data/events/recommendations/rebalance")
    async def aws_rebalance(request: Request) -> Response:
        if not aws_authorised(request):
            return Response(status_code=401)
        if state.rebalance_at is None:
            return Response(status_code=404)
        return JSONResponse({"noticeTime": _iso(state.rebalance_at)})

    # GCP -------------------------------------------------------------------------
    @app.get("/computeMetadata/v1/instance/preempted")
    async def gcp_preempted(request: Request) -> Response:
        if request.headers.get("metadata-flavor") != "Google":
            return PlainTextResponse("Missing Metadata-Flavor:Google header.", status_code=403)
        if request.query_params.get("wait_for_change") == "true" and state.deadline is None:
            timeout = float(request.query_params.get("timeout_sec", "60"))
            changed = state.changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout)
        value = "TRUE" if state.deadline is not None else "FALSE"
        return PlainTextResponse(value, headers={"ETag": str(state.incarnation)})

    # Azure -----------------------------------------------------------------------
    @app.get("/metadata/scheduledevents")
    async def azure_events(request: Request) -> Response:
        if request.headers.get("metadata") != "true":
            error = {"error": "Bad request. Required metadata header not specified"}
            return JSONResponse(error, status_code=400)
        events: list[dict[str, Any]] = []
        if state.deadline is not None:
            events.append(
                {
                    "EventId": f"preempt-{state.incarnation}",
                    "EventType": "Preempt",
                    "ResourceType": "VirtualMachine",
                    "Resources": [state.vm_name],
                    "EventStatus": "Scheduled",
                    "NotBefore": format_datetime(state.deadline.astimezone(UTC), usegmt=True),
                    "Description": "The virtual machine is being evicted.",
                    "EventSource": "Platform",
                    "DurationInSeconds": -1,
                }
            )
        return JSONResponse({"DocumentIncarnation": state.incarnation, "Events": events})

    return app


class Machines:
    """An ASGI app: ``/vm/<name>/<path>`` is ``<path>`` of machine ``name``'s metadata
    service, any other path the default machine's."""

    _PREFIX = "/vm/"

    def __init__(self) -> None:
        self.default = create_app()
        self.machines: dict[str, FastAPI] = {}

    def state(self, name: str) -> MetadataState:
        """Machine ``name``'s state (made on first use)."""
        return self._machine(name).state.metadata  # type: ignore[no-any-return]

    def _machine(self, name: str) -> FastAPI:
        if name not in self.machines:
            self.machines[name] = create_app(MetadataState(vm_name=name))
        return self.machines[name]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(self._PREFIX):
            await self.default(scope, receive, send)
            return
        name, _, rest = path[len(self._PREFIX) :].partition("/")
        inner = {**scope, "path": "/" + rest, "raw_path": ("/" + rest).encode()}
        await self._machine(name)(inner, receive, send)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="cic-metadata-server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8169)
    args = parser.parse_args()
    uvicorn.run(Machines(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
