"""Node event signatures: only the node itself, or a trusted tool, is believed."""

from __future__ import annotations

import pytest
from cic_common.events import NodeReady, PoisonEvent, encode
from cic_common.signing import SIGNATURE_HEADER, NodeAuthenticator, signature_header

SECRETS = {"nreal": "s3cr3t-of-nreal"}
READY = NodeReady(node_id="nreal", endpoint="http://10.0.0.5:8000", model="m")
BODY = encode(READY, producer="agent")[1]


async def lookup(node_id: str) -> str | None:
    return SECRETS.get(node_id)


def check() -> NodeAuthenticator:
    return NodeAuthenticator(lookup, {"cost-bot": "bot-key"})


async def test_an_event_signed_by_its_node_is_believed() -> None:
    header = signature_header(SECRETS["nreal"], READY.subject(), BODY)
    await check()(READY.subject(), BODY, {SIGNATURE_HEADER: header}, READY)


async def test_a_trusted_tool_may_sign_for_a_node() -> None:
    header = signature_header("bot-key", READY.subject(), BODY, key_id="tool/cost-bot")
    await check()(READY.subject(), BODY, {SIGNATURE_HEADER: header}, READY)


FORGED = NodeReady(node_id="nreal", endpoint="http://attacker:8000", model="m")
FORGED_BODY = encode(FORGED, producer="attacker")[1]


@pytest.mark.parametrize(
    ("headers", "body", "subject", "reason"),
    [
        ({}, FORGED_BODY, FORGED.subject(), "unsigned"),
        (
            {SIGNATURE_HEADER: signature_header("guess", FORGED.subject(), FORGED_BODY)},
            FORGED_BODY, FORGED.subject(), "bad signature",
        ),
        (
            {SIGNATURE_HEADER: signature_header(SECRETS["nreal"], READY.subject(), BODY)},
            FORGED_BODY, FORGED.subject(), "bad signature",
        ),
        (
            {SIGNATURE_HEADER: signature_header("x", FORGED.subject(), FORGED_BODY, "tool/evil")},
            FORGED_BODY, FORGED.subject(), "unknown signer",
        ),
        (
            {SIGNATURE_HEADER: signature_header(SECRETS["nreal"], "cic.node-ready.nother", BODY)},
            BODY, "cic.node-ready.nother", "does not match",
        ),
    ],
    ids=["unsigned", "wrong-secret", "signature-of-another-body", "unknown-tool", "moved-subject"],
)  # fmt: skip
async def test_forged_node_events_are_refused(
    headers: dict[str, str], body: bytes, subject: str, reason: str
) -> None:
    with pytest.raises(PoisonEvent, match=reason):
        await check()(subject, body, headers, FORGED)


async def test_an_unknown_node_cannot_sign() -> None:
    ghost = NodeReady(node_id="nghost", endpoint="http://x:1", model="m")
    body = encode(ghost, producer="x")[1]
    header = signature_header("anything", ghost.subject(), body)
    with pytest.raises(PoisonEvent, match="unknown signer"):
        await check()(ghost.subject(), body, {SIGNATURE_HEADER: header}, ghost)
