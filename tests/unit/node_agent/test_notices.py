"""Each cloud's preemption notice, read as its documentation says."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime

import pytest
from cic_node_agent.domain.gpus import parse_nvidia_smi
from cic_node_agent.domain.notices import (
    Notice,
    aws_instance_action,
    aws_rebalance,
    azure_preempt,
    gcp_preempted,
)

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (404, "", None),
        (200, '{"action": "terminate", "time": "2026-11-23T08:02:00Z"}',
         Notice(datetime(2026, 11, 23, 8, 2, tzinfo=UTC), "aws-spot-instance-action")),
        (200, '{"action": "stop", "time": "2026-11-23T08:02:00Z"}',
         Notice(datetime(2026, 11, 23, 8, 2, tzinfo=UTC), "aws-spot-instance-action")),
    ],
)  # fmt: skip
def test_aws_instance_action(status: int, body: str, expected: Notice | None) -> None:
    assert aws_instance_action(status, body) == expected


@pytest.mark.parametrize(
    ("status", "body"), [(200, '{"action": "reboot", "time": "x"}'), (500, ""), (200, "nope")]
)
def test_aws_answers_outside_the_documentation_are_errors(status: int, body: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (json and our own errors both are)
        aws_instance_action(status, body)


def test_aws_rebalance_recommendation_is_an_early_signal() -> None:
    assert aws_rebalance(404, "") is None
    at = aws_rebalance(200, '{"noticeTime": "2026-11-23T07:58:00Z"}')
    assert at == datetime(2026, 11, 23, 7, 58, tzinfo=UTC)


@pytest.mark.parametrize(("body", "preempted"), [("TRUE", True), ("FALSE", False), ("", False)])
def test_gcp_preempted(body: str, preempted: bool) -> None:
    assert gcp_preempted(body) is preempted


def azure_document(*events: Mapping[str, object]) -> str:
    return json.dumps({"DocumentIncarnation": 2, "Events": list(events)})


PREEMPT = {
    "EventId": "e1",
    "EventType": "Preempt",
    "ResourceType": "VirtualMachine",
    "Resources": ["vm-a"],
    "EventStatus": "Scheduled",
    "NotBefore": "Mon, 23 Nov 2026 08:00:30 GMT",
}


@pytest.mark.parametrize(
    ("document", "vm_name", "expected"),
    [
        (azure_document(), "vm-a", None),
        (azure_document({**PREEMPT, "EventType": "Reboot"}), "vm-a", None),
        (azure_document(PREEMPT), "vm-b", None),
        (azure_document(PREEMPT), "vm-a", Notice(datetime(2026, 11, 23, 8, 0, 30, tzinfo=UTC),
                                                 "azure-scheduled-events")),
        (azure_document(PREEMPT), None, Notice(datetime(2026, 11, 23, 8, 0, 30, tzinfo=UTC),
                                               "azure-scheduled-events")),
        (azure_document({**PREEMPT, "NotBefore": ""}), "vm-a",
         Notice(NOW, "azure-scheduled-events")),
    ],
    ids=["no-events", "other-type", "other-vm", "ours", "name-unknown", "already-started"],
)  # fmt: skip
def test_azure_scheduled_events(
    document: str, vm_name: str | None, expected: Notice | None
) -> None:
    assert azure_preempt(document, vm_name, NOW) == expected


def test_nvidia_smi_rows_are_read_and_unknown_values_kept_as_none() -> None:
    output = (
        "0, NVIDIA H100 80GB HBM3, 87, 61234, 81559, 64\n1, NVIDIA H100, [N/A], 10, 81559, 40\nbad"
    )
    gpus = parse_nvidia_smi(output)
    assert [g.index for g in gpus] == [0, 1]
    assert gpus[0].utilization_pct == 87.0
    assert gpus[0].memory_total_mib == 81559.0
    assert gpus[1].utilization_pct is None
