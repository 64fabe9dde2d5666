"""Content-addressed results on (shared) storage, the claims that make every cell train once,
and what is kept on disk.

    <storage>/<sweep>/cells/<id>/result.json     the cell's result: finished (with its metric history)
                                                 or stopped early; the store alone reads and writes it
    <storage>/<sweep>/cells/<id>/failure.json    why its last attempt failed (never over a result)
    <storage>/<sweep>/cells/<id>/work/           the fine-tune's folder while the cell trains:
        phase*/state.pt                          the latest checkpoint (model, optimiser, RNG):
                                                 all that resuming needs, replaced at each evaluation
        phase1/best/                             phase 1's best weights, no optimiser state, kept
                                                 while a phase-2 cell of the sweep may need them
        phase2/best/                             only with ``keep_best_model: true``
    <storage>/<sweep>/tune/                      Tune's own trial folders (no checkpoints in them)

Retention: a finished cell keeps its result; the rest of its folder goes (``release``), except
best weights as above. ``gc`` removes what no cell of a sweep file needs.
"""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ssmix.files import Busy, locked, tree_bytes, write_json
from ssmix.sweep.cells import Cell, CellResult, Status

MIX_RECORD = "mix_examples.json"   # the mixes of phase 2's first step, as the step made them
MIX_PAGE = "mix_examples.html"     # those mixes drawn as Figure 1, by the trial after its result
MIX_PAGE_ERROR = "mix_examples.error"   # why the page could not be drawn: a warning on the run
CELL_ARTIFACTS = (MIX_PAGE,)       # files of a cell's folder that its MLflow run carries


class ResultStore:
    def __init__(self, sweep_dir: Path):
        self.sweep_dir = Path(sweep_dir)
        self.root = self.sweep_dir / "cells"

    def cell_dir(self, cell_id: str) -> Path:
        return self.root / cell_id

    def work_dir(self, cell_id: str) -> Path:
        return self.cell_dir(cell_id) / "work"

    def best_weights(self, cell_id: str, phase: str = "phase1") -> Path:
        return self.work_dir(cell_id) / phase / "best"

    # ------------------------------------------------------------------------------ results

    def result(self, cell_id: str) -> CellResult | None:
        """The cell's outcome: done (finished, or stopped by an early-stopping scheduler: a rerun
        does not train it again), failed (its last attempt; a rerun trains it), or None."""
        for name in ("result.json", "failure.json"):
            path = self.cell_dir(cell_id) / name
            if path.exists():
                return CellResult.from_json(json.loads(path.read_text()))
        return None

    def done(self, cell_id: str) -> CellResult | None:
        """The cell's result if it needs no more training (finished or stopped), else None."""
        path = self.cell_dir(cell_id) / "result.json"
        return CellResult.from_json(json.loads(path.read_text())) if path.exists() else None

    def finished(self, cell_id: str) -> CellResult | None:
        result = self.done(cell_id)
        return result if result is not None and result.is_finished else None

    def write_result(self, cell: Cell, result: CellResult) -> None:
        """Store what a cell produced, in one shape whatever its state. A failure is kept apart,
        so that it never replaces a result another driver stored meanwhile."""
        self.cell_dir(cell.id).mkdir(parents=True, exist_ok=True)
        if result.status is Status.FAILED:
            write_json(self.cell_dir(cell.id) / "failure.json", result.to_json(cell))
            return
        write_json(self.cell_dir(cell.id) / "result.json", result.to_json(cell))
        (self.cell_dir(cell.id) / "failure.json").unlink(missing_ok=True)

    def needs_training(self, cell: Cell, waiting: bool = True) -> bool:
        """No result yet; or a phase-1 cell whose weights were collected while a phase-2 cell
        still waits for them (``waiting``; phase 1 is deterministic: it is trained again, to the
        same result)."""
        if self.done(cell.id) is None:
            return True
        return cell.kind == "phase1" and waiting and not self.best_weights(cell.id).is_dir()

    @contextmanager
    def claim(self, cell_id: str):
        """Exclusive claim on a cell while it trains: a second sweep (or a leftover trial of a
        killed driver) waits here, then finds the result instead of training the cell again."""
        with locked(self.cell_dir(cell_id) / ".claim"):
            yield

    @contextmanager
    def active(self):
        """Held (shared) by every driver while it runs; ``gc`` needs it exclusively."""
        with locked(self.sweep_dir / ".active", shared=True):
            yield

    # ---------------------------------------------------------------------------- retention

    def release(self, cell: Cell, keep_best_model: bool) -> None:
        """After a cell's result is written: drop its working files. Phase 1 keeps its best
        weights (phase 2 starts from them); phase 2 keeps its own only when asked."""
        work = self.work_dir(cell.id)
        keep = {"phase1"} if cell.kind == "phase1" else ({"phase2"} if keep_best_model else set())
        if not work.is_dir():
            return
        for entry in work.iterdir():
            if entry.name in keep and entry.is_dir():
                for inner in entry.iterdir():
                    if inner.name != "best":
                        _remove(inner)
            else:
                _remove(entry)

    def cell_bytes(self, cell_id: str) -> int:
        return tree_bytes(self.cell_dir(cell_id))

    def total_bytes(self) -> int:
        return tree_bytes(self.sweep_dir)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@dataclass
class Collected:
    paths: list[Path]
    bytes: int


def collect_garbage(store: ResultStore, cells: list[Cell], keep_best_model: bool = False,
                    dry_run: bool = False) -> Collected:
    """Remove what no cell of ``cells`` needs: folders of cells not in the plan (other settings,
    older code), phase-1 weights whose phase-2 cells all have results, working files of finished
    cells (phase-2 weights too, unless ``keep_best_model``), and Tune's trial folders. Refuses
    while a driver of the sweep runs."""
    planned = {c.id: c for c in cells}
    waiting = {c.phase1_id for c in cells if c.kind == "phase2" and store.done(c.id) is None}
    doomed: list[Path] = []
    if store.root.is_dir():
        for folder in sorted(p for p in store.root.iterdir() if p.is_dir()):
            cell = planned.get(folder.name)
            if cell is None:
                doomed.append(folder)
                continue
            if store.done(cell.id) is None:
                continue                                   # unfinished: its checkpoint resumes it
            work = store.work_dir(cell.id)
            needed = cell.id in waiting if cell.kind == "phase1" else keep_best_model
            if work.is_dir() and not needed:
                doomed.append(work)
    tune = store.sweep_dir / "tune"
    if tune.is_dir():
        doomed += sorted(tune.iterdir())
    size = sum(tree_bytes(p) for p in doomed)
    if not dry_run:
        try:
            with locked(store.sweep_dir / ".active", blocking=False):
                for path in doomed:
                    _remove(path)
        except Busy:
            raise Busy(f"a sweep is running on {store.sweep_dir}: gc waits until it ends") from None
    return Collected(doomed, size)
