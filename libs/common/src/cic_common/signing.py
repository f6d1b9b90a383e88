"""Events bound to who sent them: HMAC signatures of node events, and their check.

A node's agent signs every event with the secret the provisioner gave it; consumers of
node claims (``node-ready``, ``heartbeat``, ``termination-warning``) check the signature
before believing a word, so a forged ``node-ready`` pointing at another address is
dead-lettered. Trusted external tools may sign with keys of their own.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Mapping

from cic_common.events import Event, PoisonEvent

__all__ = ["SIGNATURE_HEADER", "NodeAuthenticator", "SecretLookup", "sign", "signature_header"]

SIGNATURE_HEADER = "Cic-Signature"
"""``node:<hex>`` (signed with the node's secret) or ``tool/<name>:<hex>`` (a trusted
tool's key). The MAC covers the subject, a newline, then the body."""

SecretLookup = Callable[[str], Awaitable[str | None]]


def sign(secret: str, subject: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``subject`` and ``body``."""
    return hmac.digest(secret.encode(), subject.encode() + b"\n" + body, hashlib.sha256).hex()


def signature_header(secret: str, subject: str, body: bytes, key_id: str = "node") -> str:
    return f"{key_id}:{sign(secret, subject, body)}"


class NodeAuthenticator:
    """Checks that a node event was signed by that node (or by a trusted tool).

    Raises ``PoisonEvent`` for an unsigned event, an unknown signer, a wrong signature,
    or an event whose subject is not its own (a signed heartbeat replayed under another
    node's subject). Node secrets never change, so they are cached once found.
    """

    def __init__(self, lookup: SecretLookup, trusted: Mapping[str, str] | None = None) -> None:
        self._lookup = lookup
        self._trusted = dict(trusted or {})
        self._secrets: dict[str, str] = {}

    async def __call__(
        self, subject: str, body: bytes, headers: Mapping[str, str], event: Event
    ) -> None:
        header = headers.get(SIGNATURE_HEADER)
        if not header:
            raise PoisonEvent(f"unsigned {event.TYPE!r}: node events need a {SIGNATURE_HEADER}")
        if subject != event.subject():
            raise PoisonEvent(f"subject {subject!r} does not match the event ({event.subject()})")
        key_id, _, digest = header.rpartition(":")
        secret = await self._secret(key_id, getattr(event, "node_id", ""))
        if secret is None:
            raise PoisonEvent(f"unknown signer {key_id!r} for {event.subject()}")
        if not hmac.compare_digest(sign(secret, subject, body), digest):
            raise PoisonEvent(f"bad signature on {event.TYPE!r} from {key_id!r}")

    async def _secret(self, key_id: str, node_id: str) -> str | None:
        if key_id.startswith("tool/"):
            return self._trusted.get(key_id.removeprefix("tool/"))
        if key_id != "node" or not node_id:
            return None
        if node_id not in self._secrets:
            found = await self._lookup(node_id)
            if found is None:
                return None
            self._secrets[node_id] = found
        return self._secrets[node_id]
