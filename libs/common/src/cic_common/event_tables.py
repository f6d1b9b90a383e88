"""The reference tables of ``docs/events.md``, generated from the event models and roles.

``python -m cic_common.event_tables docs/events.md`` rewrites the parts between the
``<!-- events:start -->`` and ``<!-- events:end -->`` markers (every event's fields) and
between ``<!-- publishers:start -->`` and ``<!-- publishers:end -->`` (who may publish
what, from ``cic_common.permissions``); a test fails when the page and the code disagree.
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path

from pydantic.fields import FieldInfo

from cic_common.events import EVENT_TYPES, GpuFacts, NodeSpec, RequestUsage
from cic_common.permissions import ROLES, Role

__all__ = [
    "END", "PUBLISHERS_END", "PUBLISHERS_START", "START", "render_publishers",
    "render_tables", "rewrite",
]  # fmt: skip

START = "<!-- events:start -->"
END = "<!-- events:end -->"
PUBLISHERS_START = "<!-- publishers:start -->"
PUBLISHERS_END = "<!-- publishers:end -->"


def _type_name(field: FieldInfo) -> str:
    annotation = field.annotation
    if typing.get_origin(annotation) is typing.Literal:
        return " \\| ".join(f"`{v}`" for v in typing.get_args(annotation))
    name = getattr(annotation, "__name__", None) or str(annotation)
    return name.replace("typing.", "").replace("cic_common.events.", "").replace("|", "\\|")


def _notes(field: FieldInfo) -> str:
    text = (field.description or "").replace("|", "\\|")
    if field.is_required():
        return f"required. {text}".strip().rstrip(".") if text else "required"
    default = field.get_default(call_default_factory=False)
    return f"{text}; default `{default!r}`".lstrip("; ")


def render_tables() -> str:
    sections = []
    for event_type, model in EVENT_TYPES.items():
        doc = (model.__doc__ or "").strip().splitlines()[0].replace("``", "`")
        rows = [
            f"### `{event_type}` (v{model.VERSION})",
            "",
            f"{doc} Subject: `cic.{event_type}.<{model.KEY}>`.",
            "",
            "| Field | Type | Notes |",
            "|---|---|---|",
        ]
        rows += [
            f"| `{name}` | {_type_name(field)} | {_notes(field)} |"
            for name, field in model.model_fields.items()
        ]
        sections.append("\n".join(rows))
    parts = ((NodeSpec, "`launch-requested.spec`"), (GpuFacts, "`heartbeat.gpus`"),
             (RequestUsage, "`usage-recorded.requests`"))  # fmt: skip
    for part, where in parts:
        doc = (part.__doc__ or "").strip().splitlines()[0].replace("``", "`")
        rows = [f"### `{part.__name__}` (in {where})", "", doc, "", "| Field | Type | Notes |",
                "|---|---|---|"]  # fmt: skip
        rows += [
            f"| `{name}` | {_type_name(field)} | {_notes(field)} |"
            for name, field in part.model_fields.items()
        ]
        sections.append("\n".join(rows))
    return "\n\n".join(sections)


def _listed(names: list[str]) -> str:
    return ", ".join(f"`{name}`" for name in names) or "—"


def _jetstream(role: Role) -> str:
    rights = ["declares the streams"] if role.declares else []
    rights += ["updates their configuration"] if role.updates else []
    pulled = role.pulled_streams()
    if pulled:
        rights.append(f"durable consumers on {_listed(pulled)}")
    if role.reads:
        rights.append(
            f"watches {_listed(list(role.reads))} live; looks at every stream "
            "and consumer, and gets stored messages one by one"
        )
    return "; ".join(rights) or "publishes only"


def render_publishers() -> str:
    """One row per NATS user: the events it may publish and what it needs besides."""
    rows = [
        "| User | Who | Publishes | Consumes (and may dead-letter) | Requests | JetStream |",
        "|---|---|---|---|---|---|",
    ]
    for role in ROLES:
        requests = [f"asks `{s}`" for s in role.asks] + [f"answers `{s}`" for s in role.answers]
        rows.append(
            f"| `{role.name}` | {role.summary} | {_listed([e.TYPE for e in role.publishes])} "
            f"| {_listed([d.event.TYPE for d in role.consumes])} | {', '.join(requests) or '—'} "
            f"| {_jetstream(role)} |"
        )
    return "\n".join(rows)


def _replace(page: str, start: str, end: str, content: str) -> str:
    head, _, rest = page.partition(start)
    _, _, tail = rest.partition(end)
    return f"{head}{start}\n{content}\n{end}{tail}"


def rewrite(page: str) -> str:
    """``page`` with its generated parts made current; the publishers' table only where
    the page has its markers."""
    page = _replace(page, START, END, render_tables())
    if PUBLISHERS_START in page:
        page = _replace(page, PUBLISHERS_START, PUBLISHERS_END, render_publishers())
    return page


if __name__ == "__main__":
    path = Path(sys.argv[1])
    path.write_text(rewrite(path.read_text()))
