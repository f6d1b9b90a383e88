"""The provisioner's database work: the node rows it creates and the edges it owns."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator

import asyncpg
from cic_common.events import LaunchRequested
from cic_common.lifecycle import NodeStatus
from cic_common.nodes import NodeRepository

__all__ = ["ProvisionerStore", "UnknownDeployment"]


class UnknownDeployment(Exception):
    """A launch for a deployment we do not have; it can never succeed."""


class ProvisionerStore(NodeRepository):
    """Node transitions plus the row an external ``launch-requested`` may need."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self._pool = pool

    async def admit(self, request: LaunchRequested) -> NodeStatus:
        """The node's status, inserting it as ``requested`` when the scheduler did not
        (a launch published by an external tool). Idempotent by node id.

        Raises:
            UnknownDeployment: the deployment does not exist or was deleted.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.fetchval("SELECT status FROM nodes WHERE id = $1", request.node_id)
            if status is not None:
                return NodeStatus(status)
            live = await conn.fetchval(
                "SELECT true FROM deployments WHERE id = $1 AND deleted_at IS NULL",
                request.deployment_id,
            )
            if not live:
                raise UnknownDeployment(f"no live deployment {request.deployment_id!r}")
            await conn.execute(
                "INSERT INTO nodes (id, deployment_id, generation, status, spec, backend)"
                " VALUES ($1, $2, $3, 'requested', $4, $5) ON CONFLICT (id) DO NOTHING",
                request.node_id,
                request.deployment_id,
                request.generation,
                request.spec.model_dump(mode="json"),
                request.spec.backend,
            )
            return NodeStatus.REQUESTED

    async def status_of(self, node_id: str) -> NodeStatus | None:
        status = await self._pool.fetchval("SELECT status FROM nodes WHERE id = $1", node_id)
        return None if status is None else NodeStatus(status)

    @contextlib.asynccontextmanager
    async def launch_claim(self, node_id: str) -> AsyncIterator[bool]:
        """Whether this instance may launch ``node_id`` now: a session advisory lock
        held for the whole launch, so two provisioners handed the same command (a
        duplicate, a redelivery after a timeout) never launch it twice. Released on
        exit, and by PostgreSQL if this instance dies."""
        async with self._pool.acquire() as conn:
            key = f"launch:{node_id}"
            claimed = await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", key)
            try:
                yield bool(claimed)
            finally:
                if claimed:
                    await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", key)

    async def node_secret_for_launch(self, node_id: str) -> str:
        """The node's signing secret, created on first use; the same on every retry."""
        secret: str = await self._pool.fetchval(
            "UPDATE nodes SET secret = coalesce(secret, $2) WHERE id = $1 RETURNING secret",
            node_id,
            secrets.token_hex(32),
        )
        return secret
