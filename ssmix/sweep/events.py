"""What happens to a cell while a sweep runs (started, evaluated, finished, failed), from whatever
runs it: the Tune callback (``trainables.tune_parts``) and the in-process runner
(``ssmix.sweep.local``) both call these, so what a sweep records does not depend on what ran it.

Each event is stored first (a cell the scheduler stopped gets a stopped result, so a rerun does
not train it again; a failure is kept beside the cell), then handed to the tracker's one writer
(``Recorder``, which never stops training when MLflow is away) and to ``Progress``.
"""

from __future__ import annotations

import time

from ssmix.sweep.cells import Cell, CellResult
from ssmix.sweep.progress import Progress, read_step
from ssmix.sweep.recorder import Recorder
from ssmix.sweep.store import ResultStore

ASHA_STOPPED = "stopped early by the ASHA scheduler"


class CellEvents:
    def __init__(self, store: ResultStore, recorder: Recorder, progress: Progress, early_stopping: bool):
        self.store, self.recorder, self.progress, self.early_stopping = store, recorder, progress, early_stopping
        self.failures: dict[str, str] = {}         # cell id -> why it failed
        self.launched: dict[str, float] = {}       # cell id -> when it was started
        self.trained: set[str] = set()             # cells this invocation trained (not a peer driver)

    def started(self, cell: Cell) -> None:
        self.launched.setdefault(cell.id, time.time())
        self.recorder.cell_started(cell)
        self.progress.started(cell.label, cell.id, lambda: read_step(self.store, cell.id))

    def evaluated(self, cell: Cell, evaluation: dict) -> None:
        self.recorder.cell_evaluated(cell, evaluation)

    def finished(self, cell: Cell, last_selection: float | None = None, last_step: int | None = None,
                 trained_here: bool = True) -> None:
        """The cell's trial ended without an error; ``last_*``: what it last reported (for a cell
        the scheduler stopped, which has no result of its own); ``trained_here``: False where
        another driver stored the result while this one's trial waited for the cell's claim."""
        result = self.store.done(cell.id)
        if result is None and self.early_stopping and cell.early_stoppable:
            result = CellResult.stopped(ASHA_STOPPED, last_selection, last_step)
            self.store.write_result(cell, result)
            self.store.release(cell, keep_best_model=False)
        if result is None:
            self.failed(cell, "trial ended without a result")
            return
        self.failures.pop(cell.id, None)    # an earlier attempt failed; this one finished
        if trained_here:
            self.trained.add(cell.id)
        self.recorder.cell_finished(cell, result)
        self.progress.finished(cell.label, cell.id)

    def failed(self, cell: Cell, reason: str) -> None:
        self.failures[cell.id] = reason
        result = CellResult.failed(reason)
        if self.store.done(cell.id) is None:
            self.store.write_result(cell, result)
        self.recorder.cell_failed(cell, result)
        self.progress.failed_cell(cell.label, reason, cell.id)
