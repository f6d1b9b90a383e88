"""Each NATS user may publish its own events and nobody else's; what ships is what is generated."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from cic_common import events
from cic_common.events import EVENT_TYPES
from cic_common.permissions import ROLES, permits, render_config, role

ROOT = Path(__file__).parents[3]
CONFIG = ROOT / "deploy" / "nats" / "nats-server.conf"

PUBLISHERS = {
    "launch-requested": {"scheduler", "reconciler", "tools"},
    "node-launching": {"provisioner"},
    "node-launched": {"provisioner"},
    "launch-failed": {"provisioner"},
    "node-ready": {"node", "tools"},
    "heartbeat": {"node", "tools"},
    "termination-warning": {"node", "tools"},
    "node-draining": {"scheduler"},
    "terminate-requested": {"scheduler", "reconciler", "tools"},
    "node-terminated": {"provisioner"},
    "node-lost": {"reconciler"},
    "replica-suspected": {"gateway"},
    "deployment-changed": {"gateway"},
    "usage-recorded": {"gateway"},
}
"""Who says what: docs/architecture.md ("Who owns what") and the public contract."""

CONTRACT = {"launch-requested", "terminate-requested", "heartbeat", "node-ready",
            "termination-warning"}  # fmt: skip
"""What docs/events.md lets external tools publish."""


def test_the_committed_server_config_is_the_one_generated() -> None:
    assert CONFIG.read_text() == render_config(), (
        "run: python -m cic_common.permissions deploy/nats/nats-server.conf"
    )


def test_the_server_config_fsyncs_every_write_and_names_no_secret() -> None:
    config = render_config()
    assert "sync_interval: always" in config
    for r in ROLES:
        assert f"password: ${r.password_variable}\n" in config


@pytest.mark.parametrize(
    ("user", "subject", "allowed"),
    [
        ("node", "cic.heartbeat.n0123456789ab", True),
        ("node", "cic.launch-requested.n0123456789ab", False),
        ("node", "dlq.cic.heartbeat.n0123456789ab", False),
        ("node", "cic.inventory.request", False),
        ("node", "$JS.API.STREAM.CREATE.CIC_EVENTS", False),
        ("tools", "cic.terminate-requested.n0123456789ab", True),
        ("tools", "cic.node-terminated.n0123456789ab", False),
        ("tools", "$JS.API.STREAM.INFO.CIC_DLQ", True),
        ("tools", "$JS.API.STREAM.PURGE.CIC_DLQ", False),
        ("tools", "$JS.API.STREAM.MSG.GET.CIC_DLQ", True),
        ("tools", "$JS.API.CONSUMER.INFO.CIC_EVENTS.provisioner-launch-requested", True),
        ("tools", "$JS.API.CONSUMER.MSG.NEXT.CIC_EVENTS.provisioner-launch-requested", False),
        ("tools", "$JS.API.CONSUMER.DURABLE.CREATE.CIC_EVENTS.provisioner-launch-requested",
         False),
        ("tools", "$JS.API.CONSUMER.CREATE.CIC_EVENTS", False),
        ("gateway", "cic.usage-recorded.host.example.com-12", True),
        ("gateway", "cic.prices.request", True),
        ("gateway", "cic.inventory.request", False),
        ("scheduler", "dlq.cic.deployment-changed.d0123456789ab", True),
        ("scheduler", "dlq.cic.launch-requested.n0123456789ab", False),
        ("scheduler", "$JS.ACK.CIC_EVENTS.scheduler-node-lost.1.2.3.4.0", True),
        ("scheduler", "$JS.ACK.CIC_EVENTS.provisioner-launch-requested.1.2.3.4.0", False),
        ("scheduler", "$JS.ACK.CIC_HEARTBEATS.health-heartbeats.1.2.3.4.0", False),
        ("gateway", "$JS.API.CONSUMER.DURABLE.CREATE.CIC_EVENTS.gateway-usage", True),
        ("gateway", "$JS.API.CONSUMER.DURABLE.CREATE.CIC_EVENTS.scheduler-node-lost", False),
        ("gateway", "$JS.API.CONSUMER.MSG.NEXT.CIC_EVENTS.scheduler-node-lost", False),
        ("provisioner", "$JS.API.CONSUMER.MSG.NEXT.CIC_EVENTS.provisioner-launch-requested",
         True),
        ("provisioner", "cic.heartbeat.n0123456789ab", False),
        ("health", "$JS.API.CONSUMER.MSG.NEXT.CIC_HEARTBEATS.health-heartbeats", True),
        ("health", "$JS.API.STREAM.DELETE.CIC_EVENTS", False),
        ("reconciler", "cic.inventory.request", True),
        ("reconciler", "cic.launch-requested.n0123456789ab", True),
        ("reconciler", "$JS.API.CONSUMER.DURABLE.CREATE.CIC_EVENTS.reconciler", False),
    ],
)  # fmt: skip
def test_a_user_may_publish_what_its_job_needs_and_nothing_else(
    user: str, subject: str, allowed: bool
) -> None:
    assert role(user).may_publish(subject) is allowed


def test_the_publishers_table_covers_every_event() -> None:
    assert set(PUBLISHERS) == set(EVENT_TYPES)


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_only_the_owners_of_an_event_may_publish_it(event_type: str) -> None:
    subject = f"cic.{event_type}.k0123456789ab"
    assert {r.name for r in ROLES if r.may_publish(subject)} == PUBLISHERS[event_type]


def test_tools_may_publish_the_five_contract_subjects_and_no_other_event() -> None:
    tools = role("tools")
    allowed = {t for t in EVENT_TYPES if tools.may_publish(f"cic.{t}.n0123456789ab")}
    assert allowed == CONTRACT


def test_every_event_has_a_publisher_besides_the_tools() -> None:
    published = {e.TYPE for r in ROLES if r.name != "tools" for e in r.publishes}
    assert published == set(EVENT_TYPES)


def test_nobody_may_delete_or_purge_a_stream_or_publish_dead_letters_it_does_not_own() -> None:
    for r in ROLES:
        for subject in ("$JS.API.STREAM.DELETE.CIC_EVENTS", "$JS.API.STREAM.PURGE.CIC_DLQ",
                        "$JS.API.CONSUMER.DELETE.CIC_EVENTS.scheduler-node-lost"):  # fmt: skip
            assert not r.may_publish(subject), (r.name, subject)
        dead = {t for t in EVENT_TYPES if r.may_publish(f"dlq.cic.{t}.n0123456789ab")}
        assert dead == {d.event.TYPE for d in r.consumes}, r.name


def test_only_the_provisioner_hears_requests_and_only_tools_watch_events() -> None:
    for r in ROLES:
        assert r.may_subscribe(f"_INBOX_{r.name}.AbC.1"), r.name
        others = {o.name for o in ROLES if o is not r and o.may_subscribe(f"_INBOX_{r.name}.x")}
        assert others == set(), (r.name, others)  # nobody listens in on another's replies
        assert r.may_subscribe("_INBOX.AbC.1") is (r.name == "tools"), r.name
        hears = r.may_subscribe("cic.inventory.request")
        assert hears is (r.name in {"provisioner", "tools"}), r.name
        assert r.may_subscribe("cic.launch-requested.n1") is (r.name == "tools"), r.name
    assert render_config().count("allow_responses: true") == 1


def _service_sources() -> dict[str, str]:
    """Each service's bootstrap source by the name of its NATS user."""
    sources = {}
    for path in sorted(ROOT.glob("services/*/src/*/bootstrap.py")):
        service = path.parents[2].name
        sources["node" if service == "node-agent" else service] = path.read_text()
    return sources


def test_every_service_has_a_user() -> None:
    assert set(_service_sources()) == {r.name for r in ROLES} - {"tools"}


@pytest.mark.parametrize(("user", "source"), sorted(_service_sources().items()))
def test_a_service_may_run_the_consumers_and_declarations_its_bootstrap_does(
    user: str, source: str
) -> None:
    consumers = re.findall(r'\bbus\.(?:batch_)?consumer\(\s*(\w+),\s*"([^"]+)"', source)
    r = role(user)
    assert {(getattr(events, event).TYPE, durable) for event, durable in consumers} == {
        (d.event.TYPE, d.name) for d in r.consumes
    }
    assert ("declare=False" not in source) is r.declares
    assert (r.declares and "update_streams=False" not in source) is r.updates


def test_docker_compose_runs_the_generated_config_and_each_service_as_its_own_user() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    nats = compose["nats"]
    assert "./deploy/nats/nats-server.conf:/etc/nats/nats-server.conf:ro" in nats["volumes"]
    assert nats["command"] == ["-c", "/etc/nats/nats-server.conf"]
    assert set(nats["environment"]) == {r.password_variable for r in ROLES}
    services = {name: spec for name, spec in compose.items() if spec["image"] == "cic:latest"}
    assert set(services) == {r.name for r in ROLES if r.declares}
    for name, spec in services.items():
        url = spec["environment"]["CIC_NATS_URL"]
        assert url == f"nats://{name}:${{{role(name).password_variable}:?}}@nats:4222"


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("cic.>", "cic.a", True),
        ("cic.>", "cic.a.b.c", True),
        ("cic.>", "cic", False),
        ("cic.*", "cic.a", True),
        ("cic.*", "cic.a.b", False),
        ("cic.*.x", "cic.a.x", True),
        ("cic.*.x", "cic.a.y", False),
        ("cic.a", "cic.a", True),
        ("cic.a", "cic.a.b", False),
        ("cic.a.b", "cic.a", False),
    ],
)
def test_subject_patterns_match_as_nats_server_applies_them(
    pattern: str, subject: str, matches: bool
) -> None:
    assert permits([pattern], subject) is matches
