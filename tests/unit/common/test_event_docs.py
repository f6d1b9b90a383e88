"""docs/events.md stays true: every event type and every field is described there."""

from __future__ import annotations

from pathlib import Path

import pytest
from cic_common.events import EVENT_TYPES, Event

DOC = Path(__file__).parents[3] / "docs" / "events.md"


@pytest.mark.parametrize("event_type", [EVENT_TYPES[t] for t in sorted(EVENT_TYPES)])
def test_every_event_and_field_is_documented(event_type: type[Event]) -> None:
    text = DOC.read_text()
    heading = f"### `{event_type.TYPE}` (v{event_type.VERSION})"
    assert heading in text
    section = text.split(heading, 1)[1].split("\n### ", 1)[0]
    for field in event_type.model_fields:
        assert f"| `{field}` |" in section, f"{event_type.TYPE}.{field} is not documented"
