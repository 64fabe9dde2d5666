"""The cells of a sweep file (``ssmix.sweep.cells``), their ids, and which phase-1 cell each
phase-2 cell needs.

A cell's id hashes its trial config and the source of the modules that determine a result, so a
rerun trains only cells without a finished result, adding a seed or a method adds only the new
cells, and a change to the training code makes every old result stale (a change to the report or
the command line does not).
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

from ssmix.config import PHASE2_ONLY, PLACEMENT, TrialConfig
from ssmix.methods import METHODS
from ssmix.sweep.cells import Cell, Origin
from ssmix.sweep.search import ProposalLog, planned_proposals, with_overrides
from ssmix.sweep.spec import SweepConfig

# The library modules whose source determines a trained result. Not here, on purpose: the
# report, the CLI, tracking, show, bench, and the sweep service itself.
RESULT_MODULES = ("segments.py", "mixing.py", "encoder.py", "methods.py", "step.py", "finetune.py",
                  "outcome.py", "splits.py", "data.py", "models.py", "tasks.py", "config.py")
PACKAGE_DIR = Path(__file__).resolve().parent.parent


def code_digest(package_dir: str | Path = PACKAGE_DIR) -> str:
    """Hash of the result-determining modules' source (read as files: nothing is imported)."""
    digest = hashlib.sha256()
    for name in RESULT_MODULES:
        digest.update(name.encode() + b"\0" + (Path(package_dir) / name).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@lru_cache(maxsize=1)
def code_version() -> str:
    """The installed code's digest (computed once per process)."""
    return code_digest()


def _hash(payload: dict) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def phase1_id(trial: dict, code: str) -> str:
    return _hash({"code": code, **{k: v for k, v in trial.items() if k not in PHASE2_ONLY + PLACEMENT}})


def phase2_id(trial: dict, first: str, code: str) -> str:
    return _hash({"code": code, "phase1": first, **{k: trial[k] for k in PHASE2_ONLY}})


def cell_pair(sweep: SweepConfig, task: str, method: str, seed: int, settings: dict, code: str,
              ratio: float | None = None, origin: Origin = Origin.GRID, search_index: int | None = None,
              control: bool = False) -> tuple[Cell, Cell | None]:
    """The phase-1 cell of (task, seed, settings) and its phase-2 cell: none for method "none"
    (phase 1 is its figure) unless ``control``, the `none` phase-2 arm of ``phase2_control``."""
    base = TrialConfig(task=sweep.task_spec(task), model=sweep.model, method="none", seed=seed,
                       data_dir=sweep.data_dir, **settings)
    base_json = base.model_dump(mode="json")
    first = phase1_id(base_json, code)
    phase1 = Cell("phase1", first, task, "none", None, seed, base_json)
    if method == "none" and not control:
        return phase1, None
    trial = base.model_copy(update={"method": method, **({"mix_ratio": ratio} if ratio else {})})
    trial_json = trial.model_dump(mode="json")
    ratio = trial.mix_ratio if METHODS[method].uses_mix_ratio else None
    phase2 = Cell("phase2", phase2_id(trial_json, first, code), task, method, ratio, seed, trial_json,
                  phase1_id=first, origin=origin, search_index=search_index)
    return phase1, phase2


def plan_cells(sweep: SweepConfig, code: str | None = None, store=None) -> list[Cell]:
    """Every cell of the sweep, each once whatever the file repeats, in the file's order: for each
    task and seed its phase-1 cell, then its phase-2 cells. A search sweep's cells are its
    proposals (grid and random: all of them; adaptive ones: those logged in ``store``) and, once a
    search is complete in ``store``, its confirmation cells."""
    code = code or code_version()
    cells: dict[str, Cell] = {}

    def add(*pair: Cell | None) -> None:
        for cell in pair:
            if cell is not None:
                cells.setdefault(cell.id, cell)

    if sweep.search is not None:
        for task, method, proposals in search_proposals(sweep, store):
            for index, params in enumerate(proposals):
                add(*search_cell_pair(sweep, task, method, params, code, index))
            best = best_proposal(sweep, task, method, proposals, store, code)
            if best is not None:
                for pair in confirm_cell_pairs(sweep, task, method, best, code):
                    add(*pair)
        return list(cells.values())
    phase2_methods = [m for m in sweep.methods if m != "none"] + (["none"] if sweep.phase2_control else [])
    settings = dict(sweep.trial)
    for task in sweep.tasks:
        for seed in sweep.seeds:
            add(cell_pair(sweep, task, "none", seed, settings, code)[0])
            for method in phase2_methods:
                for ratio in (sweep.mix_ratio_values if METHODS[method].uses_mix_ratio else [None]):
                    add(*cell_pair(sweep, task, method, seed, settings, code, ratio, control=method == "none"))
    return list(cells.values())


# ------------------------------------------------------------------------------ search cells


def searched_methods(sweep: SweepConfig) -> list[str]:
    return [m for m in sweep.methods if m != "none"]   # "none" has no phase 2: phase 1 is its figure


def search_settings(sweep: SweepConfig, params: dict) -> dict:
    settings = with_overrides(sweep.trial.model_dump(), params)
    settings["selection"] = sweep.search.selection
    return {k: v for k, v in settings.items() if k != "mix_ratio"}


def search_cell_pair(sweep: SweepConfig, task: str, method: str, params: dict, code: str,
                     index: int | None = None) -> tuple[Cell, Cell]:
    """The cells of proposal ``index`` (its id does not depend on the index)."""
    return cell_pair(sweep, task, method, sweep.search.trial_seed, search_settings(sweep, params), code,
                     ratio=params.get("mix_ratio"), origin=Origin.SEARCH, search_index=index)


def confirm_cell_pairs(sweep: SweepConfig, task: str, method: str, best: dict, code: str) -> list[tuple[Cell, Cell]]:
    """The best configuration on each of ``confirm_seeds``."""
    return [cell_pair(sweep, task, method, seed, search_settings(sweep, best), code, ratio=best.get("mix_ratio"),
                      origin=Origin.CONFIRM) for seed in sweep.search.confirm_seeds]


def search_proposals(sweep: SweepConfig, store=None):
    """(task, method, proposals so far) for every searched pair: planned ones, or the log's."""
    for task in sweep.tasks:
        for method in searched_methods(sweep):
            if sweep.search.algorithm == "tpe":
                logged = ProposalLog(store.storage, task, method).read() if store else []
                yield task, method, [p.params for p in logged]
            else:
                yield task, method, planned_proposals(sweep.search, task, method)


def best_proposal(sweep: SweepConfig, task: str, method: str, proposals: list[dict], store, code: str) -> dict | None:
    """The best proposal of a complete search (budget spent, every proposal has a result), else None."""
    if store is None or len(proposals) < sweep.search.budget(method):
        return None
    scored = []
    for params in proposals:
        result = store.done(search_cell_pair(sweep, task, method, params, code)[1].id)
        value = None if result is None else result.objective()
        if value is None:
            return None
        scored.append((value, params))
    return max(scored, key=lambda item: item[0])[1]


def plan_complete(sweep: SweepConfig, store, code: str | None = None) -> bool:
    """Whether ``plan_cells`` already lists every cell the sweep will have: always for a grid; for a
    search once every searched (task, method) is complete (its confirmation cells are known then)."""
    if sweep.search is None:
        return True
    code = code or code_version()
    return all(best_proposal(sweep, task, method, proposals, store, code) is not None
               for task, method, proposals in search_proposals(sweep, store))


def dependents(cells: list[Cell]) -> dict[str, list[Cell]]:
    """phase-1 id -> the phase-2 cells that start from its weights."""
    out: dict[str, list[Cell]] = {}
    for cell in cells:
        if cell.kind == "phase2":
            out.setdefault(cell.phase1_id, []).append(cell)
    return out


def cells_to_train(cells: list[Cell], store) -> list[Cell]:
    """Cells without a result, and phase-1 cells whose collected weights a waiting phase 2 needs."""
    waiting = {first: [c for c in after if store.done(c.id) is None]
               for first, after in dependents(cells).items()}
    return [c for c in cells if store.needs_training(c, waiting=bool(waiting.get(c.id)))]
