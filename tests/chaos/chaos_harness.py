"""The chaos suite's harness: a deployment served on the local platform, steady load on it
from the official ``openai`` client, and each scenario's figures gathered into the table
``make test-chaos`` prints at the end (``tests/conftest.py`` prints it; the figures also
go to ``.cic/chaos/figures.json``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import openai
from cic_common.processes import carries_env
from cic_local.platform import Platform
from conftest import Running
from support import eventually

__all__ = [
    "FIGURES", "Deployed", "Figures", "Scenario", "SteadyLoad", "agents_of", "deploy", "engine_of",
    "node_statuses", "processes_of", "serving_nodes", "spawns_of",
]  # fmt: skip

FIGURES_FILE = Path(__file__).resolve().parents[2] / ".cic" / "chaos" / "figures.json"
PROMPTS = ("Tell me about spot GPUs", "Why are replicas spread over zones?",
           "What does a preemption notice give?")  # fmt: skip


@dataclass
class Scenario:
    """What one fault scenario measured; None where it does not apply."""

    name: str
    requests_sent: int | None = None
    requests_failed: int | None = None
    streams_sent: int | None = None
    streams_failed: int | None = None
    """Streams that ended in an error or with other text than an uncut one."""
    events_published: int | None = None
    events_lost: int | None = None
    launches: int | None = None
    duplicate_launches: int | None = None
    orphans: int | None = None
    notes: str = ""


@dataclass
class Figures:
    """The scenarios measured in this session, in the order they ran."""

    scenarios: list[Scenario] = field(default_factory=list)

    def record(self, scenario: Scenario) -> None:
        self.scenarios.append(scenario)
        FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
        FIGURES_FILE.write_text(json.dumps([asdict(s) for s in self.scenarios], indent=2))

    def table(self) -> str:
        """A Markdown table, one row per scenario."""
        columns = ("requests sent / failed", "streams sent / failed", "events published / lost",
                   "launches / duplicates", "orphans")  # fmt: skip
        lines = [
            "| scenario | " + " | ".join(columns) + " |",
            "|---" + "|---:" * len(columns) + "|",
        ]
        for s in self.scenarios:
            cells = (
                _pair(s.requests_sent, s.requests_failed),
                _pair(s.streams_sent, s.streams_failed),
                _pair(s.events_published, s.events_lost),
                _pair(s.launches, s.duplicate_launches),
                "—" if s.orphans is None else str(s.orphans),
            )
            name = s.name + (f" ({s.notes})" if s.notes else "")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _pair(first: int | None, second: int | None) -> str:
    return "—" if first is None else f"{first} / {second if second is not None else '—'}"


FIGURES = Figures()
"""This session's figures (printed by ``tests/conftest.py`` at the end)."""


@dataclass(frozen=True)
class Deployed:
    running: Running
    deployment_id: str
    model: str
    key: str
    """A user key allowed the model."""
    key_id: str


async def deploy(
    running: Running, model: str, replicas: int, engine_args: list[str] | None = None
) -> Deployed:
    """A deployment of ``model`` with ``replicas`` active nodes, and a user key."""
    admin = running.admin
    body = {"model": model, "replicas": replicas, "engine_args": engine_args or []}
    created = await admin.post("/admin/deployments", json=body)
    assert created.status_code == 201, created.text
    deployment_id = str(created.json()["id"])

    async def active() -> bool:
        listed = await admin.get("/admin/nodes", params={"deployment_id": deployment_id})
        nodes = [n for n in listed.json()["data"] if n["status"] == "active"]
        models = await admin.get("/v1/models")
        return len(nodes) == replicas and model in [m["id"] for m in models.json()["data"]]

    await eventually(active, within=180)
    key = await admin.post("/admin/keys", json={"name": f"chaos {model}"})
    assert key.status_code == 201, key.text
    return Deployed(running, deployment_id, model, str(key.json()["key"]), str(key.json()["id"]))


async def node_statuses(deployed: Deployed) -> dict[str, str]:
    """The deployment's nodes and their status, by node id."""
    params = {"deployment_id": deployed.deployment_id}
    listed = await deployed.running.admin.get("/admin/nodes", params=params)
    return {str(n["id"]): str(n["status"]) for n in listed.json()["data"]}


def processes_of(node_id: str) -> dict[int, str]:
    """Every process on this host started for ``node_id``, with its command line."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and carries_env(int(entry), "CIC_NODE_ID", node_id):
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            found[int(entry)] = cmdline.decode(errors="replace")
    return found


def agents_of(node_id: str) -> list[int]:
    """The node agent processes running for ``node_id`` (not their engines)."""
    return [p for p, cmd in processes_of(node_id).items() if "engines.sim" not in cmd]


def engine_of(node_id: str) -> int:
    engines = [p for p, cmd in processes_of(node_id).items() if "engines.sim" in cmd]
    assert len(engines) == 1, f"{node_id}: {processes_of(node_id)}"
    return engines[0]


async def serving_nodes(deployed: Deployed, besides: set[str], count: int) -> dict[str, str]:
    """Once ``count`` nodes other than ``besides`` are active, all the nodes' statuses."""
    statuses = await node_statuses(deployed)
    active = [n for n, status in statuses.items() if status == "active" and n not in besides]
    return statuses if len(active) == count else {}


async def scale_to(deployed: Deployed, replicas: int) -> None:
    """Ask for ``replicas`` and wait until that many nodes serve."""
    scaled = await deployed.running.admin.patch(
        f"/admin/deployments/{deployed.deployment_id}", json={"replicas": replicas}
    )
    assert scaled.status_code in (200, 202), scaled.text
    await eventually(partial(serving_nodes, deployed, set(), replicas), within=120)


async def metered(deployed: Deployed, requests: int) -> bool:
    """Whether the deployment key's usage counts exactly ``requests`` requests (none
    twice)."""
    answer = await deployed.running.admin.get("/admin/usage", params={"key_id": deployed.key_id})
    return sum(int(row["requests"]) for row in answer.json()["data"]) == requests


def spawns_of(platform: Platform, node_id: str) -> int:
    """How often the provisioner started an agent for ``node_id``, from its log: a second
    agent started and since gone would not show among the processes."""
    count = 0
    logs = sorted((platform.state_dir / "logs").glob("provisioner*.log"))  # every instance's
    for line in "\n".join(p.read_text(errors="replace") for p in logs).splitlines():
        with contextlib.suppress(ValueError):
            doc = json.loads(line)
            if isinstance(doc, dict) and doc.get("msg") == "node agent started":
                count += doc.get("node_id") == node_id
    return count


@dataclass
class _Tally:
    requests: int = 0
    requests_failed: int = 0
    streams: int = 0
    streams_failed: int = 0
    errors: list[str] = field(default_factory=list)


class SteadyLoad:
    """``workers`` clients of the official ``openai`` SDK (no retries of their own: any
    retry is the gateway's), each alternating a whole answer and a stream of the same
    few prompts. The simulator answers a prompt with the same text every time, so a
    stream counts as failed if it errs or ends with other text than the uncut answer."""

    def __init__(
        self, deployed: Deployed, workers: int = 6, max_tokens: int = 24, base_url: str = ""
    ) -> None:
        self._deployed = deployed
        self._base_url = base_url or deployed.running.base_url
        """The gateway the load goes to (by default the platform's first)."""
        self._workers = workers
        self._max_tokens = max_tokens
        self._tally = _Tally()
        self._expected: dict[str, str] = {}
        self._stop = asyncio.Event()
        self.warm_up = 0
        """Requests made before the load, for each prompt's uncut answer."""

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[SteadyLoad]:
        """Load from the first moment inside the block to its end."""
        client = self._client()
        try:
            for prompt in PROMPTS:  # what each prompt gets when nothing is wrong
                self._expected[prompt] = await self._whole(client, prompt)
                self.warm_up += 1
            tasks = [asyncio.create_task(self._work(i)) for i in range(self._workers)]
            try:
                yield self
            finally:
                self._stop.set()
                await asyncio.gather(*tasks)
        finally:
            await client.close()

    def scenario(self, name: str, notes: str = "") -> Scenario:
        """The load's figures, as one scenario's."""
        t = self._tally
        return Scenario(name, t.requests, t.requests_failed, t.streams, t.streams_failed,
                        notes=notes)  # fmt: skip

    @property
    def errors(self) -> list[str]:
        return self._tally.errors

    def _client(self) -> openai.AsyncOpenAI:
        base_url = f"{self._base_url}/v1"
        return openai.AsyncOpenAI(base_url=base_url, api_key=self._deployed.key, max_retries=0,
                                  timeout=60)  # fmt: skip

    async def _whole(self, client: openai.AsyncOpenAI, prompt: str) -> str:
        answer = await client.chat.completions.create(
            model=self._deployed.model, messages=[{"role": "user", "content": prompt}],
            max_tokens=self._max_tokens,
        )  # fmt: skip
        return answer.choices[0].message.content or ""

    async def _streamed(self, client: openai.AsyncOpenAI, prompt: str) -> str:
        stream = await client.chat.completions.create(
            model=self._deployed.model, messages=[{"role": "user", "content": prompt}],
            max_tokens=self._max_tokens, stream=True,
        )  # fmt: skip
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    async def _work(self, worker: int) -> None:
        client = self._client()
        tally = self._tally
        turn = worker
        try:
            while not self._stop.is_set():
                prompt = PROMPTS[turn % len(PROMPTS)]
                streamed = turn % 2 == 1
                turn += 1
                try:
                    if streamed:
                        tally.streams += 1
                        text = await self._streamed(client, prompt)
                        if text != self._expected[prompt]:
                            raise AssertionError(f"stream text differs: {text!r}")
                    else:
                        tally.requests += 1
                        await self._whole(client, prompt)
                except (openai.APIError, AssertionError) as exc:
                    if streamed:
                        tally.streams_failed += 1
                    else:
                        tally.requests_failed += 1
                    at = datetime.now(UTC).strftime("%H:%M:%S.%f")[:-3]
                    tally.errors.append(f"{at} {type(exc).__name__}: {exc}"[:300])
        finally:
            await client.close()
