"""Cells, their ids, and which phase-1 cell each phase-2 cell needs.

A sweep is tasks x methods x mix ratios x seeds, cut into *cells*:

- a phase-1 cell per (task, seed, every setting phase 1 sees): phase 1 never depends on the
  method, so it is trained once and shared by every method; its result is the "No mixup" row;
- a phase-2 cell per (phase-1 cell, method, mix ratio, phase-2 settings).

A cell's id hashes its trial config and the source of the modules that determine a result, so a
rerun trains only cells without a finished result, adding a seed or a method adds only the new
cells, and a change to the training code makes every old result stale (a change to the report or
the command line does not).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from ssmix.config import PHASE2_ONLY, PLACEMENT, TrialConfig
from ssmix.methods import METHODS
from ssmix.sweep.spec import SweepConfig

# The library modules whose source determines a trained result. Not here, on purpose: the
# report, the CLI, tracking, show, bench, and the sweep service itself.
RESULT_MODULES = ("segments.py", "mixing.py", "encoder.py", "methods.py", "step.py", "finetune.py",
                  "data.py", "models.py", "tasks.py", "config.py")
PACKAGE_DIR = Path(__file__).resolve().parent.parent


def code_digest(package_dir: str | Path = PACKAGE_DIR) -> str:
    """Hash of the result-determining modules' source (read as files: nothing is imported)."""
    digest = hashlib.sha256()
    for name in RESULT_MODULES:
        digest.update(name.encode() + b"\0" + (Path(package_dir) / name).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@lru_cache(maxsize=1)
def _installed_code_digest() -> str:
    return code_digest()


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


def uses_mix_ratio(method: str) -> bool:
    return METHODS[method].kind in ("saliency_span", "input", "unk")


def phase1_id(trial: dict, code: str) -> str:
    return _hash({"code": code, **{k: v for k, v in trial.items() if k not in PHASE2_ONLY + PLACEMENT}})


def phase2_id(trial: dict, first: str, code: str) -> str:
    return _hash({"code": code, "phase1": first, **{k: trial[k] for k in PHASE2_ONLY}})


def plan_cells(sweep: SweepConfig, code: str | None = None) -> list[Cell]:
    """Every cell of the sweep, each once whatever the file repeats, in the file's order: for each
    task and seed its phase-1 cell, then its phase-2 cells."""
    code = code or _installed_code_digest()
    cells: dict[str, Cell] = {}
    phase2_methods = [m for m in sweep.methods if m != "none"] + (["none"] if sweep.phase2_control else [])
    for task in sweep.tasks:
        for seed in sweep.seeds:
            base = TrialConfig(task=sweep.task_spec(task), model=sweep.model, method="none", seed=seed,
                               data_dir=sweep.data_dir, **dict(sweep.trial))
            base_json = base.model_dump(mode="json")
            first = phase1_id(base_json, code)
            cells.setdefault(first, Cell("phase1", first, task, "none", None, seed, base_json))
            for method in phase2_methods:
                for ratio in (sweep.mix_ratio_values if uses_mix_ratio(method) else [None]):
                    trial = base.model_copy(update={"method": method, **({"mix_ratio": ratio} if ratio else {})})
                    trial_json = trial.model_dump(mode="json")
                    second = phase2_id(trial_json, first, code)
                    cells.setdefault(second, Cell("phase2", second, task, method, ratio, seed, trial_json,
                                                  phase1_id=first))
    return list(cells.values())


def dependents(cells: list[Cell]) -> dict[str, list[Cell]]:
    """phase-1 id -> the phase-2 cells that start from its weights."""
    out: dict[str, list[Cell]] = {}
    for cell in cells:
        if cell.kind == "phase2":
            out.setdefault(cell.phase1_id, []).append(cell)
    return out
