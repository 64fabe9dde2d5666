"""What a stored cell result reports: the one figure every table shows (the closing table of
`ssmix sweep run`, `ssmix sweep status`, the MLflow summary runs, `ssmix sweep best` and the
report), named by the split it was measured on; and the objective a search maximises.

The figure is the paper's: accuracy on the task's reported split at the checkpoint selected over
both phases (phase 2's own best when asked). It is never the held-out dev split a `selection:
dev-split` run selects on. A task selected on several splits at once (ANLI's dev rounds) reports
its selection accuracy, their mean, in a one-column table; the report shows each round apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from ssmix.config import default
from ssmix.methods import PHASE2_CONTROL

DEV_SPLIT = "dev"               # the held-out part of train that `selection: dev-split` selects on
SELECTION = "selection"         # the split name of a figure that is a task's selection accuracy


def reported_split(splits: Iterable[str]) -> str:
    """Of the splits a result has accuracies for, the one a one-column table reports."""
    splits = list(splits)
    return next((s for s in splits if s != DEV_SPLIT), splits[0])


@dataclass(frozen=True)
class Figure:
    value: float        # accuracy in percent
    split: str          # what it was measured on: a split's name, or SELECTION


def figure(result: dict, phase2_only: bool = False) -> Figure:
    """The figure of a finished cell's stored result (``ResultStore.finished``)."""
    source = result["phase2"] if phase2_only and result.get("phase2") else result
    accuracy = source["best_accuracy"]
    if len([s for s in accuracy if s != DEV_SPLIT]) > 1:
        return Figure(100.0 * source["best_selection"], SELECTION)
    split = reported_split(accuracy)
    return Figure(100.0 * accuracy[split], split)


def objective(result: dict | None) -> float | None:
    """What a search maximises: phase 2's best selection accuracy (the last one for a stopped cell)."""
    if result is None:
        return None
    if result.get("status") == "stopped":
        return result.get("last_selection_accuracy")
    return result["phase2"]["best_selection"]


def row_name(kind: str, method: str, mix_ratio: float | None) -> str:
    """A table row's name: "none" (phase 1), the phase-2 control, the method, or the method at a
    mix ratio other than the default one."""
    if kind == "phase1":
        return "none"
    if method == "none":
        return PHASE2_CONTROL
    if mix_ratio is not None and mix_ratio != default("mix_ratio"):
        return f"{method} λ0={mix_ratio:g}"
    return method
