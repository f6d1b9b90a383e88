"""The reference tables of ``docs/events.md``, generated from the event models.

``python -m cic_common.event_tables docs/events.md`` rewrites the part between the
``<!-- events:start -->`` and ``<!-- events:end -->`` markers; a test fails when the
page and the models disagree.
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path

from pydantic.fields import FieldInfo

from cic_common.events import EVENT_TYPES, GpuFacts, NodeSpec, RequestUsage

__all__ = ["END", "START", "render_tables", "rewrite"]

START = "<!-- events:start -->"
END = "<!-- events:end -->"


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


def rewrite(page: str) -> str:
    head, _, rest = page.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{render_tables()}\n{END}{tail}"


if __name__ == "__main__":
    path = Path(sys.argv[1])
    path.write_text(rewrite(path.read_text()))
