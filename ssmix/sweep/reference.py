"""The sweep-file reference (docs/sweep-file.md), generated from the schema itself: every key, its
type, its default and its description come from the pydantic models a sweep file is validated
with, so the page cannot drift from what `ssmix sweep run` accepts. A test compares the committed
page with this output; `python -m ssmix.sweep.reference > docs/sweep-file.md` writes it anew.
"""

from __future__ import annotations

import types
import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from ssmix.config import PhaseConfig, TrialSettings
from ssmix.sweep.search import Dimension, SearchConfig
from ssmix.sweep.spec import MixRatioSpace, Resources, SchedulerConfig, SweepConfig, TaskResources
from ssmix.tasks import TaskSpec

# Each nested model once, under the key path where a sweep file uses it.
SECTIONS: list[tuple[str, type[BaseModel], str]] = [
    ("", SweepConfig, "The top level of a sweep file."),
    ("trial", TrialSettings, "Any trial setting, each alone; what is not given keeps its default."),
    ("trial.phase1, trial.phase2", PhaseConfig, "One phase of the two-phase fine-tune; a phase given in part "
     "keeps its own defaults for the rest (phase 1: 3 epochs at 5e-5, phase 2: 5 at 1e-5)."),
    ("resources", Resources, "What each trial asks Ray for."),
    ("resources.per_task.<task>", TaskResources, "Overrides for one task."),
    ("mix_ratios", MixRatioSpace, "A search space instead of a list: `samples` values drawn once, with `seed`."),
    ("scheduler", SchedulerConfig, "Early stopping of phase-2 cells (ASHA, one per task)."),
    ("search", SearchConfig, "A search per task and method instead of the seeds × mix ratios grid."),
    ("search.space.<setting>", Dimension, "One searched setting (phases as phase1.lr, phase2.weight_decay ...)."),
    ("custom_tasks[]", TaskSpec, "Your own task from CSV or JSON Lines files."),
]
NESTED = {model: path for path, model, _ in SECTIONS}


def type_name(annotation) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        limits = ", ".join(filter(None, (limits_text(item) for item in args[1:])))
        return type_name(args[0]) + (f" ({limits})" if limits else "")
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    if origin is typing.Literal:
        return " / ".join(f"`{a}`" for a in args)
    if origin in (list, tuple):
        inner = [a for a in args if a is not Ellipsis]
        return f"list of {type_name(inner[0])}" if inner else "list"
    if origin is dict:
        return f"mapping {type_name(args[0])} → {type_name(args[1])}"
    if annotation is type(None):
        return "none"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"`{NESTED[annotation]}` (below)" if annotation in NESTED else annotation.__name__
    return getattr(annotation, "__name__", str(annotation))


def default_text(field) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "none"
    if isinstance(value, BaseModel):
        return "its defaults"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(str, value)) + "]" if value else "[]"
    if isinstance(value, dict):
        return "{}" if not value else str(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def limits_text(item) -> str:
    """The numeric limits pydantic checks (ge, gt, le, lt) of one metadata item."""
    if getattr(item, "metadata", None):       # a Field() inside Annotated: its constraints
        return ", ".join(filter(None, (limits_text(inner) for inner in item.metadata)))
    parts = []
    for name, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
        value = getattr(item, name, None)
        if value is not None and value is not PydanticUndefined:
            parts.append(f"{sign} {value:g}" if isinstance(value, float) else f"{sign} {value}")
    return ", ".join(parts)


def bounds_text(field) -> str:
    return ", ".join(filter(None, (limits_text(item) for item in field.metadata)))


def section(path: str, model: type[BaseModel], about: str) -> list[str]:
    title = f"`{path}`" if path else "Top level"
    lines = [f"## {title}", "", about, "", "| key | type | default | what it does |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        kind = type_name(field.annotation)
        limits = bounds_text(field)
        if limits:
            kind += f" ({limits})"
        description = " ".join((field.description or "").split()).replace("|", "\\|").replace("<", "&lt;")
        lines.append(f"| `{name}` | {kind} | {default_text(field)} | {description} |")
    return lines + [""]


def sweep_file_reference() -> str:
    lines = ["# The sweep file", "",
             "Generated from the schema (`ssmix/sweep/reference.py`); a test fails when this page is out of date.",
             "Regenerate with `python -m ssmix.sweep.reference > docs/sweep-file.md`. Loading a file checks every",
             "key at once and names each bad one (`ssmix sweep run FILE --dry-run` checks it with everything a",
             "run needs). Examples: `sweeps/*.yaml`.", ""]
    for path, model, about in SECTIONS:
        lines += section(path, model, about)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(sweep_file_reference(), end="")
