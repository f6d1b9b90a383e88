"""Who may publish and subscribe to what on NATS, and the nats-server config enforcing it.

``ROLES`` is the one declaration of which events each service, every node agent and
external tooling publishes; every right below is derived from it. ``python -m
cic_common.permissions deploy/nats/nats-server.conf`` writes the server's config, and a
test fails when the committed file and this module disagree.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from cic_common.events import (
    DeploymentChanged,
    Event,
    Heartbeat,
    LaunchFailed,
    LaunchRequested,
    NodeDraining,
    NodeLaunched,
    NodeLaunching,
    NodeLost,
    NodeReady,
    NodeTerminated,
    ReplicaSuspected,
    TerminateRequested,
    TerminationWarning,
    UsageRecorded,
)
from cic_common.streams import (
    DLQ_PREFIX,
    INVENTORY_SUBJECT,
    PRICES_SUBJECT,
    STREAMS,
    dlq_subject,
    stream_for,
)

__all__ = ["ROLES", "Durable", "Role", "inbox_prefix", "permits", "render_config", "role"]

TOOL_INBOXES = "_INBOX.>"
"""Where external tools take their replies: the default of every NATS client."""


def inbox_prefix(user: str) -> str:
    """Where ``user``'s replies land (JetStream acks and API answers, request replies,
    pulled events): a prefix of its own, so no other user may listen in on them."""
    return f"_INBOX_{user}"


class Durable(NamedTuple):
    """A durable consumer: the events it pulls, and the name all instances share."""

    event: type[Event]
    name: str

    @property
    def stream(self) -> str:
        return stream_for(f"cic.{self.event.TYPE}.>")


@dataclass(frozen=True)
class Role:
    """One NATS user: every instance of a service, every node agent, or external tooling."""

    name: str
    summary: str
    publishes: tuple[type[Event], ...]
    """The events it may publish."""
    consumes: tuple[Durable, ...] = ()
    """Its durable consumers: it creates, pulls from and acks these alone (the server
    ties a durable's name in the request to the one in the subject), and dead-letters
    their events."""
    declares: bool = False
    """It creates the streams at each start if they are missing (``Bus.connect``)."""
    updates: bool = False
    """It also brings the streams' configuration up to date (``update_streams=True``):
    one role only, and not the one facing the internet."""
    asks: tuple[str, ...] = ()
    """Core request subjects it sends requests to."""
    answers: tuple[str, ...] = ()
    """Core request subjects it serves, replying once to each request's inbox."""
    reads: tuple[str, ...] = ()
    """Subjects it may watch live; with any, it may also read the streams."""

    @property
    def password_variable(self) -> str:
        """The environment variable nats-server reads this user's password from."""
        return f"CIC_NATS_PASSWORD_{self.name.upper()}"

    def publish_allow(self) -> list[str]:
        subjects = [f"cic.{e.TYPE}.>" for e in self.publishes]
        subjects += [dlq_subject(f"cic.{d.event.TYPE}.>") for d in self.consumes]
        subjects += self.asks
        if self.declares:
            subjects += [f"$JS.API.STREAM.CREATE.{spec.name}" for spec in STREAMS]
        if self.updates:
            subjects += [f"$JS.API.STREAM.UPDATE.{spec.name}" for spec in STREAMS]
        for d in self.consumes:
            subjects += [
                f"$JS.API.CONSUMER.DURABLE.CREATE.{d.stream}.{d.name}",
                f"$JS.API.CONSUMER.MSG.NEXT.{d.stream}.{d.name}",
                f"$JS.ACK.{d.stream}.{d.name}.>",
            ]
        if self.reads:
            # Read-only: look at streams and consumers, get stored messages one by one.
            # No consumer of its own: a create naming an existing durable (even through
            # the ephemeral subject) would re-point that service's consumer.
            subjects += ["$JS.API.INFO", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST"]
            for spec in STREAMS:
                subjects += [
                    f"$JS.API.STREAM.INFO.{spec.name}",
                    f"$JS.API.STREAM.MSG.GET.{spec.name}",
                    f"$JS.API.CONSUMER.INFO.{spec.name}.*",
                    f"$JS.API.CONSUMER.NAMES.{spec.name}",
                    f"$JS.API.CONSUMER.LIST.{spec.name}",
                ]
        return subjects

    def subscribe_allow(self) -> list[str]:
        inboxes = [f"{inbox_prefix(self.name)}.>"]
        if self.reads:  # tools: a NATS CLI takes its replies on the default inboxes
            inboxes.append(TOOL_INBOXES)
        return [*inboxes, *self.answers, *self.reads]

    def pulled_streams(self) -> list[str]:
        """The streams its durable consumers read, in the order of ``STREAMS``."""
        pulled = {d.stream for d in self.consumes}
        return [spec.name for spec in STREAMS if spec.name in pulled]

    def may_publish(self, subject: str) -> bool:
        return permits(self.publish_allow(), subject)

    def may_subscribe(self, subject: str) -> bool:
        return permits(self.subscribe_allow(), subject)


ROLES: tuple[Role, ...] = (
    Role("gateway", "every gateway instance",
         publishes=(DeploymentChanged, ReplicaSuspected, UsageRecorded),
         consumes=(Durable(UsageRecorded, "gateway-usage"),),
         asks=(PRICES_SUBJECT,), declares=True),
    Role("scheduler", "every scheduler instance",
         publishes=(LaunchRequested, TerminateRequested, NodeDraining),
         consumes=(Durable(DeploymentChanged, "scheduler-deployment-changed"),
                   Durable(TerminationWarning, "scheduler-termination-warning"),
                   Durable(NodeTerminated, "scheduler-node-terminated"),
                   Durable(LaunchFailed, "scheduler-launch-failed"),
                   Durable(NodeLost, "scheduler-node-lost")),
         declares=True, updates=True),
    Role("provisioner", "every provisioner instance",
         publishes=(NodeLaunching, NodeLaunched, LaunchFailed, NodeTerminated),
         consumes=(Durable(LaunchRequested, "provisioner-launch-requested"),
                   Durable(TerminateRequested, "provisioner-terminate-requested")),
         answers=(INVENTORY_SUBJECT, PRICES_SUBJECT), declares=True),
    Role("health", "every health instance", publishes=(),
         consumes=(Durable(NodeReady, "health-node-ready"),
                   Durable(Heartbeat, "health-heartbeats"),
                   Durable(NodeDraining, "health-node-draining"),
                   Durable(NodeTerminated, "health-node-terminated"),
                   Durable(NodeLost, "health-node-lost"),
                   Durable(ReplicaSuspected, "health-replica-suspected")),
         declares=True),
    Role("reconciler", "every reconciler instance",
         # launch-requested: a launch without an outcome is sent again
         publishes=(TerminateRequested, NodeLost, LaunchRequested),
         asks=(INVENTORY_SUBJECT,), declares=True),
    Role("node", "every node agent (each proves who it is by signing its events)",
         publishes=(NodeReady, Heartbeat, TerminationWarning)),
    Role("tools", "external tooling: the commands and facts of the public contract",
         publishes=(LaunchRequested, TerminateRequested, Heartbeat, NodeReady,
                    TerminationWarning),
         reads=("cic.>", f"{DLQ_PREFIX}.>")),
)  # fmt: skip
"""Every NATS user, and the single declaration of which events each may publish."""


def role(name: str) -> Role:
    """The role called ``name``; raises ``KeyError``."""
    for candidate in ROLES:
        if candidate.name == name:
            return candidate
    raise KeyError(name)


def permits(patterns: list[str], subject: str) -> bool:
    """True when a NATS subject pattern in ``patterns`` matches ``subject`` (``*`` is one
    token, a final ``>`` one or more), as nats-server applies an allow list."""
    tokens = subject.split(".")
    for pattern in patterns:
        wanted = pattern.split(".")
        for i, token in enumerate(wanted):
            if token == ">":
                if len(tokens) > i:
                    return True
                break
            if i >= len(tokens) or (token != "*" and token != tokens[i]):
                break
        else:
            if len(wanted) == len(tokens):
                return True
    return False


_HEADER = """\
# The NATS server of CIC: its users, what each may publish and subscribe to, and how
# JetStream stores. Generated from libs/common/src/cic_common/permissions.py by
#   python -m cic_common.permissions deploy/nats/nats-server.conf
# Do not edit: a test fails when this file and the declaration disagree.
#
# No secret is in this file: nats-server takes each $CIC_NATS_PASSWORD_<USER> from its
# environment and refuses to start when one is unset. It parses the value as config,
# so use hex passwords (openssl rand -hex 32): they are safe in a URL as well.

port: 4222

jetstream {
  store_dir: "%(store_dir)s"
  # An fsync before every acknowledgement. By default nats-server acknowledges a
  # write once it is in the page cache and syncs every 2 minutes, so a power failure
  # or a kernel crash can lose writes it acknowledged: Jepsen's 2025 analysis of
  # NATS 2.12.1 found acknowledged writes lost that way. The control loops are
  # level-triggered and would converge later without a lost command or fact, but a
  # dead letter or a usage batch has no other copy. The cost is a disk sync per
  # message; the control plane writes little, mostly heartbeats (one per node every
  # 10 s). Streams have one replica on a single server; a cluster runs three.
  sync_interval: always
}
"""


def _strings(values: list[str]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def _user(r: Role) -> str:
    lines = [
        f"    # {r.name}: {r.summary}",
        "    {",
        f"      user: {r.name}",
        f"      password: ${r.password_variable}",
        "      permissions: {",
        "        publish: {allow: [",
        *(f'          "{subject}"' for subject in r.publish_allow()),
        "        ]}",
        f"        subscribe: {{allow: {_strings(r.subscribe_allow())}}}",
    ]
    if r.answers:
        lines.append("        allow_responses: true")
    lines += ["      }", "    }"]
    return "\n".join(lines)


def render_config(store_dir: str = "/data") -> str:
    """The nats-server config: JetStream under ``store_dir`` and a user per role."""
    header = _HEADER % {"store_dir": store_dir}
    users = "\n".join(_user(r) for r in ROLES)
    return f"{header}\nauthorization {{\n  users = [\n{users}\n  ]\n}}\n"


if __name__ == "__main__":
    Path(sys.argv[1]).write_text(render_config())
