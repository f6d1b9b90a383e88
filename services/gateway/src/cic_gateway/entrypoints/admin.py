"""The admin API: deployments, nodes, prices, API keys and usage. Admin keys only: an
operator's (no tenant) sees and manages everything, a tenant admin's only its tenant's
deployments, their nodes, its keys and their usage; another tenant's look missing."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
from cic_common.events import DeploymentChanged
from cic_common.streams import PRICES_SUBJECT
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from pydantic import AfterValidator, BeforeValidator

from cic_gateway.adapters.keys import ApiKey
from cic_gateway.adapters.store import ModelClaimed
from cic_gateway.domain.deployments import (
    DEFAULT_TENANT,
    DeploymentCreate,
    DeploymentPatch,
    KeyCreate,
)
from cic_gateway.domain.errors import ERROR_RESPONSES, ApiError
from cic_gateway.entrypoints.auth import require_admin

__all__ = ["router"]

log = logging.getLogger(__name__)
router = APIRouter(
    prefix="/admin",
    dependencies=[Depends(require_admin)],
    tags=["admin"],
    responses={status: ERROR_RESPONSES[status] for status in (401, 403)},
)


AdminKey = Annotated[ApiKey, Depends(require_admin)]
_ID = r"^[A-Za-z0-9_.:-]{1,128}$"
PathId = Annotated[str, Path(pattern=_ID, description="an id, as listed")]
QueryId = Annotated[str | None, Query(pattern=_ID)]


def _iso_only(value: object) -> object:
    """``since=2024`` would otherwise be read as 2024 seconds after 1970."""
    if isinstance(value, str) and not re.match(r"^\d{4}-\d{2}-\d{2}", value):
        raise ValueError("an ISO 8601 time is expected, such as 2025-01-31T00:00:00Z")
    return value


def _in_utc(value: datetime) -> datetime:
    """UTC (a time without a zone is taken as UTC); one beyond what UTC can hold, at its end."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return (datetime.min if value.year == datetime.min.year else datetime.max).replace(
            tzinfo=UTC
        )


Since = Annotated[
    datetime | None,
    BeforeValidator(_iso_only),
    AfterValidator(lambda v: None if v is None else _in_utc(v)),
    Query(description="only usage from this ISO 8601 time on (UTC when it names no zone)"),
]


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: ERROR_RESPONSES[status] for status in statuses}


def _tenant_of_new(admin: ApiKey, asked: str | None, default: str | None) -> str | None:
    """The tenant of what ``admin`` creates: any it names, if an operator's (else
    ``default``); its own, if a tenant admin's."""
    if admin.tenant is None:
        return asked if asked is not None else default
    if asked not in (None, admin.tenant):
        raise ApiError(403, "a tenant admin acts for its own tenant only", code="other_tenant")
    return admin.tenant


async def _deployment(request: Request, admin: ApiKey, dep_id: str) -> dict[str, Any]:
    """The deployment, if ``admin`` may see it; 404 otherwise (another tenant's too)."""
    deployment: dict[str, Any] | None = await request.app.state.deployments.get(dep_id)
    if deployment is None or admin.tenant not in (None, deployment["tenant"]):
        raise ApiError(404, f"no deployment {dep_id!r}")
    return deployment


async def _announce(request: Request, deployment: dict[str, Any]) -> None:
    """Tell the scheduler; if NATS is down the scheduler's periodic pass still converges."""
    event = DeploymentChanged(
        deployment_id=deployment["id"],
        generation=deployment["generation"],
        deleted=deployment["deleted_at"] is not None,
    )
    try:
        await request.app.state.bus.publish(
            event, msg_id=f"deployment:{deployment['id']}:{deployment['generation']}"
        )
    except Exception:
        log.warning("deployment-changed not published", exc_info=True)


@router.post("/deployments", status_code=201, responses=_errors(409))
async def create_deployment(
    body: DeploymentCreate, request: Request, admin: AdminKey
) -> dict[str, Any]:
    tenant = _tenant_of_new(admin, body.tenant, DEFAULT_TENANT)
    try:
        deployment: dict[str, Any] = await request.app.state.deployments.create(body, tenant)
    except asyncpg.UniqueViolationError as exc:
        raise ApiError(409, f"a live deployment is already named {body.name!r}") from exc
    except ModelClaimed as exc:
        raise ApiError(409, f"the model {body.model!r} is served to another tenant") from exc
    await _announce(request, deployment)
    return deployment


@router.get("/deployments")
async def list_deployments(
    request: Request, admin: AdminKey, include_deleted: bool = False
) -> dict[str, Any]:
    return {"data": await request.app.state.deployments.list_all(include_deleted, admin.tenant)}


@router.get("/deployments/{deployment_id}", responses=_errors(404))
async def get_deployment(
    deployment_id: PathId, request: Request, admin: AdminKey
) -> dict[str, Any]:
    deployment = await _deployment(request, admin, deployment_id)
    deployment["nodes"] = await request.app.state.deployments.nodes(deployment_id)
    return deployment


@router.patch("/deployments/{deployment_id}", responses=_errors(404))
async def update_deployment(
    deployment_id: PathId, body: DeploymentPatch, request: Request, admin: AdminKey
) -> dict[str, Any]:
    await _deployment(request, admin, deployment_id)
    try:
        deployment = await request.app.state.deployments.update(deployment_id, body)
    except ModelClaimed as exc:
        raise ApiError(409, f"the model {body.model!r} is served to another tenant") from exc
    if deployment is None:
        raise ApiError(404, f"no live deployment {deployment_id!r}")
    await _announce(request, deployment)
    return deployment  # type: ignore[no-any-return]


@router.delete("/deployments/{deployment_id}", status_code=202, responses=_errors(404))
async def delete_deployment(
    deployment_id: PathId, request: Request, admin: AdminKey
) -> dict[str, Any]:
    """Drain and terminate every node of the deployment; idempotent."""
    await _deployment(request, admin, deployment_id)
    deployment = await request.app.state.deployments.delete(deployment_id)
    if deployment is None:
        raise ApiError(404, f"no deployment {deployment_id!r}")
    await _announce(request, deployment)
    return deployment  # type: ignore[no-any-return]


@router.get("/nodes")
async def list_nodes(
    request: Request, admin: AdminKey, deployment_id: QueryId = None
) -> dict[str, Any]:
    return {"data": await request.app.state.deployments.nodes(deployment_id, admin.tenant)}


@router.get("/nodes/{node_id}/events")
async def node_events(node_id: PathId, request: Request, admin: AdminKey) -> dict[str, Any]:
    """What was asked of the node and what it reported, from the node event log."""
    if admin.tenant is not None and (
        await request.app.state.deployments.node_tenant(node_id) != admin.tenant
    ):
        raise ApiError(404, f"no node {node_id!r}")
    return {"data": await request.app.state.deployments.node_events(node_id)}


@router.get("/reconcile/reports")
async def reconcile_reports(
    request: Request, admin: AdminKey, limit: Annotated[int, Query(ge=1, le=500)] = 20
) -> dict[str, Any]:
    """The reconciler's latest passes: clusters seen, orphans taken down, ghosts marked
    lost, stuck launches sent again (the whole fleet's: an operator's key only)."""
    if not admin.operator:
        raise ApiError(403, "the fleet's reports need an operator's key", code="operator_only")
    return {"data": await request.app.state.deployments.reconcile_reports(limit)}


@router.get("/prices", responses=_errors(503))
async def prices(
    request: Request,
    gpu: Annotated[str, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")],
    count: Annotated[int, Query(ge=1, le=64)] = 1,
    spot: bool = False,
) -> dict[str, Any]:
    """Hourly prices of ``count`` x ``gpu`` wherever the catalogs sell it, cheapest first
    (asked of the provisioner, which reads SkyPilot's catalogs)."""
    query = json.dumps({"gpu": gpu, "count": count, "spot": spot}).encode()
    try:
        reply = await request.app.state.bus.nc.request(PRICES_SUBJECT, query, timeout=10)
    except (NatsTimeout, NoRespondersError) as exc:
        raise ApiError(503, "no provisioner answered the price request", retry_after=5) from exc
    body = json.loads(reply.data)
    if "error" in body:
        raise ApiError(400, str(body["error"]))
    return {"object": "list", "gpu": gpu, "count": count, "spot": spot,
            "clouds": body["clouds"], "data": body["options"]}  # fmt: skip


@router.post("/keys", status_code=201)
async def create_key(body: KeyCreate, request: Request, admin: AdminKey) -> dict[str, Any]:
    """The key itself is in the answer and nowhere else: store it now."""
    tenant = _tenant_of_new(admin, body.tenant, None if body.scope == "admin" else DEFAULT_TENANT)
    full, record = await request.app.state.keys.create(
        body.name, body.scope, body.allowed_models, rpm_limit=body.rpm_limit,
        tpm_limit=body.tpm_limit, tenant=tenant,
    )  # fmt: skip
    return {**record, "key": full}


@router.get("/keys")
async def list_keys(request: Request, admin: AdminKey) -> dict[str, Any]:
    return {"data": await request.app.state.keys.list_all(admin.tenant)}


@router.delete("/keys/{key_id}", status_code=204, responses=_errors(404))
async def revoke_key(key_id: PathId, request: Request, admin: AdminKey) -> Response:
    if not await request.app.state.keys.revoke(key_id, admin.tenant):
        raise ApiError(404, f"no key {key_id!r}")
    return Response(status_code=204)


@router.get("/usage")
async def usage(
    request: Request, admin: AdminKey, key_id: QueryId = None, since: Since = None
) -> dict[str, Any]:
    """Requests and tokens per key and model (of one key with ``key_id``; from
    ``since``, an ISO 8601 time, with it)."""
    rows = await request.app.state.usage.summary(key_id, since, admin.tenant)
    return {"object": "list", "data": rows}
