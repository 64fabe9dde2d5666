"""Sweep files and the cell plan: what a sweep must train, keyed by content.

A sweep is tasks x methods x mix ratios x seeds. It is cut into *cells*:

- a phase-1 cell per (task, seed, model, phase-1 settings, data, code version): phase 1 never
  depends on the method, so it is trained once and shared by every method; its result is the
  "No mixup" row;
- a phase-2 cell per (phase-1 cell, method, mix ratio, phase-2 settings).

A cell's id is the hash of everything that determines its result, so running a sweep file
again trains only cells without a finished result, and adding a seed or a method adds only the
new cells. Finished results live in ``<storage>/<sweep>/cells/<id>/result.json``.

Nothing here imports ray or mlflow.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from contextlib import contextmanager
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

import ssmix
from ssmix.config import PhaseConfig, TrialConfig, default_phase1, default_phase2
from ssmix.methods import METHODS
from ssmix.tasks import TASKS, TaskSpec


class SweepError(ValueError):
    """A sweep file that cannot run; the message lists every problem found."""


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cpu: float = Field(default=1, gt=0)
    gpu: float = Field(default=0, ge=0)


class TrialSettings(BaseModel):
    """Settings shared by every trial of the sweep (TrialConfig minus the swept axes)."""

    model_config = ConfigDict(extra="forbid")
    phase1: PhaseConfig = Field(default_factory=default_phase1)
    phase2: PhaseConfig = Field(default_factory=default_phase2)
    batch_size: int = Field(default=32, ge=2)
    eval_batch_size: int = Field(default=128, ge=1)
    max_length: int = Field(default=128, ge=8)
    eval_every: int = Field(default=500, ge=1)
    train_fraction: float = Field(default=1.0, gt=0, le=1)
    max_train_examples: int | None = Field(default=None, ge=2)
    max_eval_examples: int | None = Field(default=None, ge=1)
    hidden_alpha: float = Field(default=0.2, gt=0)
    saliency: Literal["free", "separate"] = "free"
    bf16: bool = False


class MixRatioSpace(BaseModel):
    """A search space over λ0: ``samples`` values drawn once, with ``seed``, from
    ``distribution`` on [low, high]. They become ordinary cells (content-addressed like any
    other), so a rerun draws the same values and trains nothing twice."""

    model_config = ConfigDict(extra="forbid")
    distribution: Literal["uniform", "loguniform"] = "uniform"
    low: float = Field(gt=0, le=1)
    high: float = Field(gt=0, le=1)
    samples: int = Field(ge=1, le=1000)
    seed: int = 0

    def values(self) -> list[float]:
        import numpy as np

        if self.high < self.low:
            raise ValueError(f"mix_ratios: high {self.high} is below low {self.low}")
        rng = np.random.default_rng(self.seed)
        if self.distribution == "uniform":
            drawn = rng.uniform(self.low, self.high, self.samples)
        else:
            drawn = np.exp(rng.uniform(np.log(self.low), np.log(self.high), self.samples))
        return sorted({round(float(v), 4) for v in drawn})


class SchedulerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["asha"] = "asha"
    grace_period: int = Field(default=1, ge=1)
    reduction_factor: int = Field(default=2, ge=2)


class SweepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    model: str = "minilm"
    custom_tasks: list[TaskSpec] = Field(default_factory=list, description="your own CSV/JSONL tasks, "
                                         "usable by name in `tasks` (validated first, so they are known there)")
    tasks: list[str] = Field(min_length=1)
    methods: list[str] = Field(min_length=1)
    mix_ratios: list[float] | MixRatioSpace = Field(default_factory=lambda: [0.1],
                                                    description="a list of λ0, or a search space")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4], min_length=1)
    phase2_control: bool = Field(default=False, description="also train a `none` phase-2 arm (5 more epochs, no mixup)")
    trial: TrialSettings = Field(default_factory=TrialSettings)
    resources: Resources = Field(default_factory=Resources)
    data_dir: str | None = None
    storage_path: str = "./ray_results"
    tracking_uri: str | None = None
    tracking_retry_seconds: float = Field(default=300, ge=0, description="how long the end of a sweep keeps "
                                          "retrying an unreachable tracking server before giving up")
    max_failures: int = Field(default=2, ge=0)
    max_concurrent_trials: int | None = Field(default=None, ge=1)
    scheduler: SchedulerConfig | None = None

    @field_validator("tasks", "methods")
    @classmethod
    def _known_names(cls, value, info):
        custom = [t.name for t in info.data.get("custom_tasks", [])] if info.field_name == "tasks" else []
        allowed = list(TASKS) + custom if info.field_name == "tasks" else METHODS
        unknown = [name for name in value if name not in allowed]
        if unknown:
            raise ValueError(f"unknown {info.field_name[:-1]}(s) {unknown}; allowed: {', '.join(allowed)}")
        return value

    @field_validator("mix_ratios")
    @classmethod
    def _ratios(cls, value):
        if isinstance(value, MixRatioSpace):
            value.values()   # checks low <= high
            return value
        if not value:
            raise ValueError("at least one mix ratio is needed")
        bad = [r for r in value if not 0 < r <= 1]
        if bad:
            raise ValueError(f"mix ratio(s) {bad} outside (0, 1]")
        return value

    @property
    def mix_ratio_values(self) -> list[float]:
        return self.mix_ratios.values() if isinstance(self.mix_ratios, MixRatioSpace) else list(self.mix_ratios)

    def task_spec(self, name: str) -> TaskSpec | str:
        """A custom task's spec (it travels inside each trial's config), or a built-in's name."""
        return next((t for t in self.custom_tasks if t.name == name), name)

    @property
    def tracking(self) -> str:
        return self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"

    def sweep_dir(self) -> Path:
        return Path(self.storage_path).expanduser().resolve() / self.name


def load_sweep(path: str | os.PathLike) -> SweepConfig:
    """Parse and validate a sweep file; every problem is listed at once, with its key."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"{path}: sweep file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SweepError(f"{path}:{where}: malformed YAML ({getattr(err, 'problem', None) or err})") from None
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: expected a mapping of sweep settings at the top level, got {type(raw).__name__}")
    try:
        sweep = SweepConfig(**raw)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"]) or "(top level)"
            message = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                message = "unknown key"
            lines.append(f"  {key}: {message}")
        raise SweepError(f"{path}: {len(lines)} error(s):\n" + "\n".join(lines)) from None
    updates = {}
    # Relative paths in a sweep file mean relative to the directory the command runs in.
    if sweep.data_dir:
        updates["data_dir"] = str(Path(sweep.data_dir).expanduser().resolve())
    elif sweep.custom_tasks:   # trials run elsewhere (Ray workers): their files need absolute paths
        updates["custom_tasks"] = [t.model_copy(update={"data_files": {
            split: str(Path(f).expanduser().resolve()) for split, f in (t.data_files or {}).items()}})
            for t in sweep.custom_tasks]
    return sweep.model_copy(update=updates) if updates else sweep


def preflight(sweep: SweepConfig) -> None:
    """Before anything runs: the model path exists and every data file the sweep needs is there
    and readable row by row. All problems are listed at once."""
    from ssmix.data import DataError, data_dir_from_env, load_checked
    from ssmix.models import resolve_model_path
    from ssmix.tasks import get_task

    problems = []
    try:
        resolve_model_path(sweep.model)
    except ValueError as err:
        problems.append(f"model: {err}")
    directory = data_dir_from_env(sweep.data_dir)
    if directory is not None:
        if not directory.is_dir():
            problems.append(f"data_dir: {directory} does not exist")
        else:
            for name in sweep.tasks:
                task = get_task(sweep.task_spec(name))
                for split in dict.fromkeys(task.train_splits + task.eval_splits):
                    try:
                        load_checked(task, split, directory)
                    except DataError as err:
                        problems.append(f"data ({name}): {err}")
    if problems:
        raise SweepError(f"sweep {sweep.name!r} cannot run; {len(problems)} problem(s):\n" +
                         "\n".join(f"  {p}" for p in problems))


# ----------------------------------------------------------------------------------- cells


def _hash(payload: dict) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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

    @property
    def label(self) -> str:
        if self.kind == "phase1":
            return f"{self.task} seed {self.seed} phase 1"
        if self.mix_ratio is None:
            return f"{self.task} {self.method} seed {self.seed}"
        return f"{self.task} {self.method} λ0={self.mix_ratio} seed {self.seed}"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "id": self.id, "task": self.task, "method": self.method,
                "mix_ratio": self.mix_ratio, "seed": self.seed, "trial": self.trial, "phase1_id": self.phase1_id}

    @classmethod
    def from_dict(cls, d: dict) -> "Cell":
        return cls(**d)


PHASE1_FIELDS = ("task", "model", "seed", "phase1", "batch_size", "eval_batch_size", "max_length", "eval_every",
                 "train_fraction", "max_train_examples", "max_eval_examples", "data_dir", "bf16")
PHASE2_FIELDS = ("method", "mix_ratio", "phase2", "hidden_alpha", "saliency", "tmix_layers")


def plan_cells(sweep: SweepConfig) -> list[Cell]:
    """Phase-1 cells first, then phase-2 cells; each once, whatever the file repeats."""
    cells: dict[str, Cell] = {}
    phase2_methods = [m for m in sweep.methods if m != "none"] + (["none"] if sweep.phase2_control else [])
    for task in sweep.tasks:
        for seed in sweep.seeds:
            base = TrialConfig(task=sweep.task_spec(task), model=sweep.model, method="none", seed=seed, data_dir=sweep.data_dir,
                               **sweep.trial.model_dump())
            base_json = base.model_dump(mode="json")
            p1 = _hash({"code": ssmix.__version__, **{k: base_json[k] for k in PHASE1_FIELDS}})
            cells.setdefault(p1, Cell("phase1", p1, task, "none", None, seed, base_json))
            for method in phase2_methods:
                ratios = sweep.mix_ratio_values if METHODS[method].kind in ("saliency_span", "input", "unk") else [None]
                for ratio in ratios:
                    trial = base.model_copy(update={"method": method, **({"mix_ratio": ratio} if ratio else {})})
                    trial_json = trial.model_dump(mode="json")
                    p2 = _hash({"code": ssmix.__version__, "phase1": p1, **{k: trial_json[k] for k in PHASE2_FIELDS}})
                    cells.setdefault(p2, Cell("phase2", p2, task, method, ratio, seed, trial_json, phase1_id=p1))
    return sorted(cells.values(), key=lambda c: c.kind)


# ------------------------------------------------------------------------------ the store


class ResultStore:
    """Finished results on (shared) storage: ``<sweep_dir>/cells/<id>/result.json``."""

    def __init__(self, sweep_dir: Path):
        self.root = Path(sweep_dir) / "cells"

    def cell_dir(self, cell_id: str) -> Path:
        return self.root / cell_id

    def result(self, cell_id: str) -> dict | None:
        """The cell's outcome: a finished result, or ``{"status": "stopped", ...}`` for a trial an
        early-stopping scheduler ended (done as well: a rerun does not train it again)."""
        path = self.cell_dir(cell_id) / "result.json"
        return json.loads(path.read_text()) if path.exists() else None

    def finished(self, cell_id: str) -> dict | None:
        result = self.result(cell_id)
        return result if result is not None and result.get("status") != "stopped" else None

    def write_result(self, cell: Cell, result: dict) -> None:
        directory = self.cell_dir(cell.id)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / "result.json.tmp"
        tmp.write_text(json.dumps({"cell": cell.to_dict(), **result}, indent=2, default=str))
        os.replace(tmp, directory / "result.json")

    @contextmanager
    def claim(self, cell_id: str):
        """Exclusive claim on a cell while it trains: a second sweep (or a leftover trial of a
        killed driver) waits here, then finds the result instead of training the cell again.
        flock: released by the kernel when the holder dies; works on local disks and NFSv4."""
        directory = self.cell_dir(cell_id)
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / ".claim", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def phase1_checkpoint(self, phase1_id: str) -> Path:
        return self.cell_dir(phase1_id) / "work" / "phase1" / "best"


# ---------------------------------------------------------------------------- reporting


def rows_for_summary(cells: list[Cell], store: ResultStore) -> dict[tuple[str, str], list[float]]:
    """(task, method label) -> the paper's figure (best over both phases) per finished seed.
    The phase-1 result is the "No mixup" row."""
    table: dict[tuple[str, str], list[float]] = {}
    phase1 = {c.id: store.finished(c.id) for c in cells if c.kind == "phase1"}
    for cell in cells:
        result = store.finished(cell.id)
        if result is None:
            continue
        if cell.kind == "phase1":
            table.setdefault((cell.task, "none"), []).append(result["best_selection"])
        else:
            method = cell.method if cell.method != "none" else "none (phase-2 control)"
            label = method if cell.mix_ratio in (None, 0.1) else f"{method} λ0={cell.mix_ratio}"
            first = phase1.get(cell.phase1_id)
            best = max(result["best_selection"], first["best_selection"] if first else float("-inf"))
            table.setdefault((cell.task, label), []).append(best)
    return table


def format_summary(table: dict[tuple[str, str], list[float]]) -> str:
    if not table:
        return "no finished cells yet"
    lines = [f"| {'task':<12} | {'method':<28} | {'accuracy % (mean ± std)':>24} | {'n':>2} |",
             f"|{'-' * 14}|{'-' * 30}|{'-' * 26}|{'-' * 4}|"]
    for (task, method), values in sorted(table.items()):
        mean = 100 * statistics.mean(values)
        std = 100 * statistics.stdev(values) if len(values) > 1 else float("nan")
        cell = f"{mean:.2f} ± {std:.2f}" if len(values) > 1 else f"{mean:.2f} ± n/a"
        lines.append(f"| {task:<12} | {method:<28} | {cell:>24} | {len(values):>2} |")
    return "\n".join(lines)


def plan_cost(sweep: SweepConfig, cells: list[Cell]) -> tuple[int, int]:
    """Trial-epochs of the whole plan, and of a naive sweep where every method's trial trains its
    own phase 1 (the "none" row being a phase-1-only trial)."""
    shared = sum(c.trial[c.kind]["epochs"] for c in cells)
    naive = sum(c.trial["phase1"]["epochs"] + c.trial["phase2"]["epochs"] for c in cells if c.kind == "phase2")
    if "none" in sweep.methods:
        naive += sum(c.trial["phase1"]["epochs"] for c in cells if c.kind == "phase1")
    return shared, naive


def timing_summary(cells: list[Cell], store: ResultStore, sweep_wall_seconds: float | None = None,
                   concurrency: float | None = None) -> str | None:
    """Where the finished cells' time went: training steps, evaluation, and the rest of each
    trial (worker start, model and data loading, checkpoints, reports): the per-trial overhead."""
    timings = [r["timing"] for r in (store.finished(c.id) for c in cells) if r and "timing" in r]
    if not timings:
        return None
    wall = sum(t["trial_wall_seconds"] for t in timings)
    train = sum(t["train_seconds"] for t in timings)
    evaluation = sum(t["eval_seconds"] for t in timings)
    overhead = wall - train - evaluation
    line = (f"{len(timings)} trials: {wall:.1f} s inside trials = {train:.1f} s training steps "
            f"+ {evaluation:.1f} s evaluation + {overhead:.1f} s other ({overhead / len(timings):.1f} s per trial, "
            f"{100 * overhead / max(wall, 1e-9):.1f}%)")
    if sweep_wall_seconds is not None and concurrency:
        driver = sweep_wall_seconds - wall / concurrency
        line += (f"\nsweep wall time {sweep_wall_seconds:.1f} s with {concurrency:g} trials at a time: "
                 f"about {max(driver, 0):.1f} s outside trials (Ray start, Tune, MLflow on the driver)")
    return line


def estimate_work(cells: list[Cell], store: ResultStore) -> dict:
    """Trial-epochs left, by phase: what the plan still has to train."""
    left = {"phase1": 0, "phase2": 0}
    for cell in cells:
        if store.result(cell.id) is None:
            left[cell.kind] += cell.trial[cell.kind]["epochs"]
    return left


def describe_plan(sweep: SweepConfig) -> str:
    cells = plan_cells(sweep)
    store = ResultStore(sweep.sweep_dir())
    lines = [f"sweep {sweep.name}: {len(cells)} cells"]
    for cell in cells:
        result = store.result(cell.id)
        state = "pending" if result is None else result.get("status", "done")
        lines.append(f"  {cell.kind}  {cell.id}  {state:<8} {cell.label}")
    left = estimate_work(cells, store)
    lines.append(f"work left: {left['phase1']} phase-1 trial-epochs, {left['phase2']} phase-2 trial-epochs")
    shared, naive = plan_cost(sweep, cells)
    lines.append(f"whole plan: {shared} trial-epochs with phase 1 shared; a naive sweep that trains phase 1 "
                 f"inside every trial: {naive} ({naive / max(shared, 1):.2f}x)")
    table = format_summary(rows_for_summary(cells, store))
    return "\n".join(lines) + "\n\n" + table
