"""Reading each cloud's preemption notice, as documented, into one ``Notice``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

__all__ = [
    "GCP_NOTICE",
    "Notice",
    "aws_instance_action",
    "aws_rebalance",
    "azure_preempt",
    "gcp_preempted",
]

GCP_NOTICE = timedelta(seconds=30)
"""GCP gives about 30 s between the preemption signal and the stop."""


@dataclass(frozen=True)
class Notice:
    """The cloud will take the node at ``deadline``."""

    deadline: datetime
    source: str


def _utc(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def aws_instance_action(status: int, body: str) -> Notice | None:
    """``GET /latest/meta-data/spot/instance-action``: 404 while nothing is planned,
    else ``{"action": "terminate"|"stop"|"hibernate", "time": "<ISO 8601 UTC>"}`` about
    two minutes ahead.

    Raises:
        ValueError: a 200 whose body is not the documented document.
    """
    if status == 404:
        return None
    if status != 200:
        raise ValueError(f"instance-action answered {status}")
    document = json.loads(body)
    if document.get("action") not in ("terminate", "stop", "hibernate"):
        raise ValueError(f"unexpected instance-action {document!r}")
    return Notice(_utc(document["time"]), "aws-spot-instance-action")


def aws_rebalance(status: int, body: str) -> datetime | None:
    """``GET /latest/meta-data/events/recommendations/rebalance``: 404, or
    ``{"noticeTime": ...}`` when the instance is at elevated risk (an early signal)."""
    if status != 200:
        return None
    return _utc(json.loads(body)["noticeTime"])


def gcp_preempted(body: str) -> bool:
    """``.../instance/preempted`` answers ``TRUE`` or ``FALSE``."""
    return body.strip().upper() == "TRUE"


def azure_preempt(document: str, vm_name: str | None, now: datetime) -> Notice | None:
    """Scheduled Events: a ``Preempt`` event for this VM (or for every VM when we do
    not know our name) is a notice; its deadline is ``NotBefore`` (RFC 1123), or now
    when the event has already started and ``NotBefore`` is empty."""
    for event in json.loads(document).get("Events", []):
        if event.get("EventType") != "Preempt":
            continue
        resources = event.get("Resources") or []
        if vm_name and resources and vm_name not in resources:
            continue
        not_before = event.get("NotBefore") or ""
        deadline = parsedate_to_datetime(not_before) if not_before else now
        return Notice(deadline, "azure-scheduled-events")
    return None
