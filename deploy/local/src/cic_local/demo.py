"""The demo on a running platform: a user key, a deployment, and a first answer."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = ["DemoReady", "prepare_demo", "wait_for_gateway"]

DEMO_NAME = "demo"


@dataclass(frozen=True)
class DemoReady:
    user_key: str
    deployment_id: str
    answer: str


async def wait_for_gateway(client: httpx.AsyncClient, within: float) -> None:
    """Until ``/healthz`` answers 200.

    Raises:
        TimeoutError: it did not within ``within`` seconds.
    """
    async with asyncio.timeout(within):
        while True:
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)


def _read_key(path: Path) -> str | None:
    return path.read_text().strip() if path.exists() else None


def _save_key(path: Path, key: str) -> None:
    path.write_text(key + "\n")
    path.chmod(0o600)


async def _user_key(client: httpx.AsyncClient, admin: dict[str, str], path: Path) -> str:
    """The demo user's key: reused from ``path`` while it still works, else a new one."""
    key = _read_key(path)
    if key is not None:
        probe = await client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
        if probe.status_code == 200:
            return key
    created = await client.post("/admin/keys", json={"name": "demo user"}, headers=admin)
    created.raise_for_status()
    key = str(created.json()["key"])
    _save_key(path, key)
    return key


async def _deployment(client: httpx.AsyncClient, admin: dict[str, str], replicas: int) -> str:
    listed = await client.get("/admin/deployments", headers=admin)
    listed.raise_for_status()
    for deployment in listed.json()["data"]:
        if deployment["name"] == DEMO_NAME:
            return str(deployment["id"])
    body = {"name": DEMO_NAME, "model": DEMO_NAME, "replicas": replicas}
    created = await client.post("/admin/deployments", json=body, headers=admin)
    created.raise_for_status()
    return str(created.json()["id"])


async def prepare_demo(
    gateway_url: str, admin_key: str, state_dir: Path, *, replicas: int = 1, within: float = 120
) -> DemoReady:
    """Make sure the demo deployment exists and answers; idempotent.

    Raises:
        TimeoutError: no answer within ``within`` seconds.
    """
    admin = {"Authorization": f"Bearer {admin_key}"}
    async with httpx.AsyncClient(base_url=gateway_url, timeout=10) as client:
        await wait_for_gateway(client, within)
        key = await _user_key(client, admin, state_dir / "user.key")
        deployment_id = await _deployment(client, admin, replicas)
        request = {"model": DEMO_NAME, "messages": [{"role": "user", "content": "Hello"}]}
        user = {"Authorization": f"Bearer {key}"}
        async with asyncio.timeout(within):
            while True:
                answer = await client.post("/v1/chat/completions", json=request, headers=user)
                if answer.status_code == 200:
                    content = answer.json()["choices"][0]["message"]["content"]
                    return DemoReady(key, deployment_id, str(content))
                await asyncio.sleep(0.25)
