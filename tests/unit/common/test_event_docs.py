"""docs/events.md stays true: its reference tables are the ones the models generate."""

from __future__ import annotations

from pathlib import Path

from cic_common.event_tables import (
    END,
    PUBLISHERS_END,
    PUBLISHERS_START,
    START,
    render_publishers,
    render_tables,
    rewrite,
)
from cic_common.events import EVENT_TYPES
from cic_common.permissions import ROLES

DOC = Path(__file__).parents[3] / "docs" / "events.md"


def test_the_page_holds_the_tables_the_models_generate() -> None:
    page = DOC.read_text()
    assert page == rewrite(page), "run: python -m cic_common.event_tables docs/events.md"


def test_every_event_and_field_has_a_row() -> None:
    tables = render_tables()
    for event_type, model in EVENT_TYPES.items():
        assert f"### `{event_type}` (v{model.VERSION})" in tables
        for field in model.model_fields:
            assert f"| `{field}` |" in tables


def test_the_page_says_who_may_publish_each_event() -> None:
    page = DOC.read_text()
    assert PUBLISHERS_START in page
    assert PUBLISHERS_END in page
    rows = render_publishers().splitlines()
    for role in ROLES:
        row = next(line for line in rows if line.startswith(f"| `{role.name}` |"))
        for event in role.publishes:
            assert f"`{event.TYPE}`" in row


def test_rewrite_keeps_what_is_outside_the_markers() -> None:
    page = f"intro\n{START}\nstale\n{END}\noutro\n"
    rewritten = rewrite(page)
    assert rewritten.startswith("intro\n")
    assert rewritten.endswith(f"{END}\noutro\n")
    assert "stale" not in rewritten
