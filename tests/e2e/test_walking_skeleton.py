"""One deployment served end to end: every service as its own process, on real NATS,
PostgreSQL and Redis, spoken to with the official ``openai`` client."""

from __future__ import annotations

import os

import openai
import pytest
from cic_common.bus import Bus
from cic_common.processes import carries_env
from conftest import Running
from support import eventually, published

pytestmark = pytest.mark.e2e

MODEL = "e2e-model"


def processes_of(node_id: str) -> list[int]:
    """Every process on this host started for ``node_id`` (its agent and its engine)."""
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    return [pid for pid in pids if carries_env(pid, "CIC_NODE_ID", node_id)]


async def test_a_deployment_is_served_end_to_end_and_deleted_without_leftovers(
    running: Running, bus: Bus
) -> None:
    admin = running.admin
    # 1. The admin creates a deployment; deployment-changed goes out.
    created = await admin.post("/admin/deployments", json={"model": MODEL, "replicas": 2})
    assert created.status_code == 201, created.text
    deployment = created.json()
    assert await published(bus, f"cic.deployment-changed.{deployment['id']}") == 1

    # 2-4. The scheduler requests two nodes, the provisioner starts them, health routes them.
    async def active_nodes() -> list[dict[str, object]]:
        listed = await admin.get("/admin/nodes", params={"deployment_id": deployment["id"]})
        nodes = listed.json()["data"]
        return nodes if len([n for n in nodes if n["status"] == "active"]) == 2 else []

    nodes = await eventually(active_nodes, within=120)
    node_ids = [str(n["id"]) for n in nodes]
    assert await published(bus, "cic.launch-requested.>") == 2
    for node_id in node_ids:
        assert processes_of(node_id), f"no process runs for {node_id}"

    # 5. A user key and the official client, streamed and not.
    key = await admin.post("/admin/keys", json={"name": "e2e user"})
    assert key.status_code == 201
    client = openai.AsyncOpenAI(base_url=f"{running.base_url}/v1", api_key=key.json()["key"])
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": "Tell me about spot GPUs"}
    ]
    models = await client.models.list()
    assert MODEL in [m.id for m in models.data]

    answer = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8)
    assert answer.model == MODEL
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 8
    content = answer.choices[0].message.content
    assert content

    stream = await client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=8, stream=True
    )
    pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert len(pieces) > 2
    assert "".join(pieces) == content

    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="no-such-model", messages=messages)
    await client.close()

    # 6. Deleting the deployment drains and terminates every node; no process is left.
    deleted = await admin.delete(f"/admin/deployments/{deployment['id']}")
    assert deleted.status_code == 202

    async def all_terminated() -> bool:
        listed = await admin.get("/admin/nodes", params={"deployment_id": deployment["id"]})
        return all(n["status"] == "terminated" for n in listed.json()["data"])

    await eventually(all_terminated, within=60)
    log = (await admin.get(f"/admin/nodes/{node_ids[0]}/events")).json()["data"]
    assert [e["type"] for e in log] == ["launch-requested", "node-ready", "terminate-requested"]
    for node_id in node_ids:
        assert processes_of(node_id) == []
    assert await published(bus, "cic.node-terminated.>") == 2

    async def unlisted() -> bool:
        return bool((await admin.get("/v1/models")).json()["data"] == [])

    await eventually(unlisted)
