"""The sweep's records: a ``Cell`` (what is trained), the ``Row`` of the tables it counts in, and
a ``CellResult`` (what it produced). Every table, summary, aggregate, power plan, search, MLflow
run and report takes these; a row's name, a run's name, the reported figure and a search's
objective are defined here and nowhere else.

A sweep is cut into cells: a phase-1 cell per (task, seed, every setting phase 1 sees), shared
by every method (its result is the "No mixup" row), and a phase-2 cell per (phase-1 cell, method,
mix ratio, phase-2 settings). Ids are ``ssmix.sweep.plan``'s.

The figure every table shows is the paper's: accuracy on the task's reported split at the
checkpoint selected over both phases (phase 2's own best when asked), named by that split; never
the held-out dev split a ``selection: dev-split`` run selects on. A task selected on several
splits at once (ANLI's dev rounds) shows its selection accuracy, their mean, in a one-column
table; the report shows each round apart.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Iterable, Literal

from ssmix.methods import METHODS, PHASE2_CONTROL
from ssmix.outcome import FinetuneResult, PhaseResult

DEV_SPLIT = "dev"               # the held-out part of train that `selection: dev-split` selects on
SELECTION = "selection"         # the split name of a figure that is a task's selection accuracy
BASELINE_ROW = "none"           # phase 1's result: the "No mixup" row every comparison is paired with


class Origin(str, Enum):
    """Where a cell came from: the sweep's grid, a search's proposal k, or the confirmation of a
    search's best configuration on more seeds. Not part of the id: the same training is one cell."""
    GRID = "grid"
    SEARCH = "search"
    CONFIRM = "confirm"


@dataclass(frozen=True)
class Row:
    """A row of the sweep's tables: the phase-1 baseline, the phase-2 control, or a method (at a
    mix ratio, for the methods that read one: a method that reads none has one row)."""

    method: str                   # BASELINE_ROW, PHASE2_CONTROL or a method of ``ssmix.methods``
    mix_ratio: float | None = None

    @property
    def name(self) -> str:
        return self.method if self.mix_ratio is None else f"{self.method} λ0={self.mix_ratio:g}"

    @property
    def is_baseline(self) -> bool:
        return self.method == BASELINE_ROW

    def sort_key(self) -> tuple:
        """The paper's order of methods, then the mix ratio."""
        order = list(METHODS)
        base = self.method if self.method != PHASE2_CONTROL else "none"
        return (order.index(base) if base in order else len(order), self.method != base,
                self.method, self.mix_ratio if self.mix_ratio is not None else -1.0)


def row_of(kind: str, method: str, mix_ratio: float | None) -> Row:
    """The row a cell (or a run recorded from one) counts in."""
    if kind == "phase1":
        return Row(BASELINE_ROW)
    if method == "none":
        return Row(PHASE2_CONTROL)
    return Row(method, mix_ratio if METHODS[method].uses_mix_ratio else None)


def row_named(name: str) -> Row:
    """The row a table printed as ``name`` (``Row.name``'s inverse, for a report's CSV)."""
    method, _, ratio = name.partition(" λ0=")
    return Row(method, float(ratio) if ratio else None)


@dataclass(frozen=True)
class Cell:
    kind: Literal["phase1", "phase2"]
    id: str
    task: str
    method: str          # "none" for phase 1
    mix_ratio: float | None
    seed: int
    trial: dict          # TrialConfig as JSON
    phase1_id: str | None = None
    origin: Origin = Origin.GRID
    search_index: int | None = None     # k of "search k"

    @property
    def row(self) -> Row:
        return row_of(self.kind, self.method, self.mix_ratio)

    @property
    def origin_label(self) -> str | None:
        """None, "search <k>" or "confirm": the stored cell's and the MLflow tag's spelling."""
        if self.origin is Origin.SEARCH:
            return f"search {self.search_index}"
        return None if self.origin is Origin.GRID else self.origin.value

    @property
    def is_proposal(self) -> bool:
        """A search's proposal: a configuration of its own, not a seed of a table's row."""
        return self.origin is Origin.SEARCH

    @property
    def early_stoppable(self) -> bool:
        """ASHA may stop it: a phase-2 cell, not a confirmation (its seeds do not compete)."""
        return self.kind == "phase2" and self.origin is not Origin.CONFIRM

    @property
    def label(self) -> str:
        """How progress lines and the closing list name it."""
        if self.kind == "phase1":
            return f"{self.task} seed {self.seed} phase 1"
        return f"{self.task} {self.row.name} seed {self.seed}"

    @property
    def run_name(self) -> str:
        """Its MLflow run's name: what differs first, short enough for the runs table."""
        parts = ["phase 1" if self.kind == "phase1" else self.row.name, self.task, f"s{self.seed}"]
        if self.origin_label:
            parts.append(self.origin_label.replace(" ", ""))      # search3, confirm
        return " · ".join(parts)

    @property
    def folder_name(self) -> str:
        """The label as a file name, with the id: what Tune names the cell's trial folder."""
        words = re.sub(r"[^A-Za-z0-9.-]+", "_", self.label.replace("λ0=", "ratio")).strip("_")
        return f"{words}-{self.id}"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "id": self.id, "task": self.task, "method": self.method,
                "mix_ratio": self.mix_ratio, "seed": self.seed, "trial": self.trial, "phase1_id": self.phase1_id,
                "origin": self.origin_label}

    @classmethod
    def from_dict(cls, d: dict) -> "Cell":
        d = dict(d)
        label = d.pop("origin", None) or ""
        origin, _, index = label.partition(" ")
        return cls(**d, origin=Origin(origin or "grid"), search_index=int(index) if index else None)


# ------------------------------------------------------------------------------------ results


def reported_split(splits: Iterable[str]) -> str:
    """Of the splits a result has accuracies for, the one a one-column table reports."""
    splits = list(splits)
    return next((s for s in splits if s != DEV_SPLIT), splits[0])


@dataclass(frozen=True)
class Figure:
    value: float        # accuracy in percent
    split: str          # what it was measured on: a split's name, or SELECTION


@dataclass(frozen=True)
class Scores:
    """What a selected checkpoint scored, as fractions: the selection accuracy, and each split's
    accuracy (for a task reported per round, each split at its own round's best checkpoint)."""

    selection: float | None
    accuracy: dict[str, float]

    @classmethod
    def of(cls, outcome: FinetuneResult | PhaseResult) -> "Scores":
        return cls(outcome.best_selection, dict(outcome.round_best_accuracy or outcome.best_accuracy))

    def figure(self) -> Figure:
        if len([s for s in self.accuracy if s != DEV_SPLIT]) > 1:
            return Figure(100.0 * self.selection, SELECTION)
        split = reported_split(self.accuracy)
        return Figure(100.0 * self.accuracy[split], split)


class Status(str, Enum):
    FINISHED = "finished"     # trained to the end: its figure is a seed of its row
    STOPPED = "stopped"       # an early-stopping scheduler ended it: done, with no figure
    FAILED = "failed"         # its trial raised, or ended without a result: trained again by a rerun


@dataclass(frozen=True)
class Timing:
    trial_wall_seconds: float     # the attempt that stored the result, from its start to the result
    started_at: float             # wall clock, as the schedule ran
    finished_at: float
    train_seconds: float          # in optimiser steps of the cell's phase, over every attempt
    eval_seconds: float


@dataclass(frozen=True)
class Placement:
    """Where the attempt that stored the result ran: the node, the GPUs Ray gave it, its device."""
    hostname: str
    device: str
    node_id: str | None = None
    node_ip: str | None = None
    gpu_ids: list[str] | None = None          # None: not run by Ray
    assigned: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CellResult:
    """What a cell produced. Made by the store (from storage), by ``CellResult.finished`` (from a
    fine-tune), ``stopped``, ``failed``, or by ``ssmix.tracking.read`` from a run's metrics; each
    figure, objective and split value is a method here, so no consumer computes one of its own."""

    status: Status
    scores: Scores | None = None             # over both phases: the paper's figure (finished only)
    phase2_scores: Scores | None = None      # phase 2's own best (a finished phase-2 cell)
    best_phase: str | None = None
    reason: str = ""                         # stopped or failed: why
    last_selection: float | None = None      # stopped: the selection accuracy it last reported
    last_step: int | None = None
    timing: Timing | None = None
    placement: Placement | None = None
    outcome: FinetuneResult | None = None    # the whole fine-tune record (histories; phase 2 starts from phase 1's)

    @classmethod
    def finished(cls, outcome: FinetuneResult, timing: Timing | None = None,
                 placement: Placement | None = None) -> "CellResult":
        return cls(Status.FINISHED, Scores.of(outcome), Scores.of(outcome.phase2) if outcome.phase2 else None,
                   outcome.best_phase, timing=timing, placement=placement, outcome=outcome)

    @classmethod
    def stopped(cls, reason: str, last_selection: float | None, last_step: int | None) -> "CellResult":
        return cls(Status.STOPPED, reason=reason, last_selection=last_selection, last_step=last_step)

    @classmethod
    def failed(cls, reason: str) -> "CellResult":
        return cls(Status.FAILED, reason=reason)

    @property
    def done(self) -> bool:
        """A rerun does not train it again (finished, or stopped by the scheduler)."""
        return self.status is not Status.FAILED

    @property
    def is_finished(self) -> bool:
        return self.status is Status.FINISHED

    def figure(self, phase2_only: bool = False) -> Figure:
        """The one figure every table shows for this result."""
        return self._scores(phase2_only).figure()

    def accuracy(self, phase2_only: bool = False) -> dict[str, float]:
        """Each split's accuracy in percent (a report's columns, ``best_acc_<split>`` in MLflow)."""
        return {split: 100.0 * value for split, value in self._scores(phase2_only).accuracy.items()}

    def selection(self, phase2_only: bool = False) -> float | None:
        """The selection accuracy in percent."""
        value = self._scores(phase2_only).selection
        return None if value is None else 100.0 * value

    def objective(self) -> float | None:
        """What a search maximises: phase 2's best selection accuracy (a fraction; the last one
        reported for a stopped cell); None without one."""
        if self.status is Status.STOPPED:
            return self.last_selection
        if self.status is Status.FINISHED and self.phase2_scores is not None:
            return self.phase2_scores.selection
        return None

    def history(self, kind: str) -> list[dict]:
        """The evaluations of the cell's own phase ("phase1" or "phase2")."""
        phase = getattr(self.outcome, kind, None) if self.outcome is not None else None
        return list(phase.history) if phase is not None else []

    @property
    def resumed(self) -> bool:
        """Whether a phase was resumed after a failure (its steps span attempts)."""
        phases = (self.outcome.phase1, self.outcome.phase2) if self.outcome is not None else ()
        return any(p is not None and p.resumed_at for p in phases)

    def _scores(self, phase2_only: bool) -> Scores:
        if not self.is_finished:
            raise ValueError(f"a {self.status.value} cell has no figure")
        return self.phase2_scores if phase2_only and self.phase2_scores is not None else self.scores

    # ---------------------------------------------------------------- on storage (the store only)

    def to_json(self, cell: Cell) -> dict:
        """The stored shape (``result.json``): the cell, and the fine-tune's whole record with
        the attempt's timing and placement, or the state and why."""
        if self.status is Status.FINISHED:
            return {"cell": cell.to_dict(), **self.outcome.to_json(),
                    "timing": asdict(self.timing) if self.timing else None,
                    "placement": asdict(self.placement) if self.placement else None}
        return {"cell": cell.to_dict(), "status": self.status.value, "reason": self.reason,
                "last_selection_accuracy": self.last_selection, "last_global_step": self.last_step}

    @classmethod
    def from_json(cls, stored: dict) -> "CellResult":
        status = Status(stored.get("status", Status.FINISHED.value))
        if status is not Status.FINISHED:
            return cls(status, reason=stored.get("reason", ""), last_selection=stored.get("last_selection_accuracy"),
                       last_step=stored.get("last_global_step"))
        phases = {k: PhaseResult(**stored[k]) if stored.get(k) else None for k in ("phase1", "phase2")}
        outcome = FinetuneResult(config=stored["config"], **phases, best_selection=stored["best_selection"],
                                 best_accuracy=stored["best_accuracy"], best_phase=stored["best_phase"],
                                 round_best_accuracy=stored.get("round_best_accuracy") or {})
        timing = Timing(**stored["timing"]) if stored.get("timing") else None
        placement = Placement(**stored["placement"]) if stored.get("placement") else None
        return cls.finished(outcome, timing, placement)
