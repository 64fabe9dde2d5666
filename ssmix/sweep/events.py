"""What happens to a cell while a sweep runs (started, evaluated, finished, failed), delivered to
the sweep's MLflow runs and to ``Progress``. The Tune callback (``trainables.tune_events``) and the
in-process runner (``ssmix.sweep.local``) both call these, so what a sweep records does not depend
on what ran it.

The tracking server may go away during a sweep: a failed MLflow call never stops training. The
cell is marked unsynced, MLflow is left alone for ``OFFLINE_SECONDS``, and the cell's stored result
is pushed at the end of the sweep (or later by ``ssmix sweep sync``).
"""

from __future__ import annotations

import time
from typing import Callable

from ssmix.sweep.aggregate import summary_rows
from ssmix.sweep.invocation import Invocation
from ssmix.sweep.plan import Cell
from ssmix.sweep.progress import Progress

ASHA_STOPPED = "stopped early by the ASHA scheduler"


class CellEvents:
    OFFLINE_SECONDS = 15.0

    def __init__(self, invocation: Invocation, progress: Progress, early_stopping: bool):
        self.invocation, self.progress, self.early_stopping = invocation, progress, early_stopping
        self.store, self.tracker = invocation.store, invocation.tracker
        self.failures: dict[str, str] = {}         # cell id -> why it failed
        self.launched: dict[str, float] = {}       # cell id -> when it was started
        self.offline_until = 0.0
        self.mlflow_seconds = 0.0                  # spent in MLflow calls (the timing line)

    def _track(self, call: Callable[[], object]) -> bool:
        if time.monotonic() < self.offline_until:
            return False
        began = time.perf_counter()
        try:
            # One MLflow writer at a time: another thread may be closing the invocation, and a run
            # touched after that would be RUNNING again.
            with self.invocation.mlflow_lock:
                if self.invocation.closed:
                    return False
                call()
            return True
        except Exception as err:  # an unreachable or failing tracking server: keep training
            if time.monotonic() >= self.offline_until:
                print(f"[sweep] an MLflow call failed ({type(err).__name__}: {str(err)[:200]}); training goes "
                      f"on, results are kept in storage and pushed to MLflow when it answers again", flush=True)
            self.offline_until = time.monotonic() + self.OFFLINE_SECONDS
            return False
        finally:
            self.mlflow_seconds += time.perf_counter() - began

    def _run(self, cell: Cell) -> str:
        return self.tracker.cell_run(cell.to_dict(), self.invocation.parent)

    def started(self, cell: Cell) -> None:
        self.launched.setdefault(cell.id, time.time())
        self.invocation.started.add(cell.id)
        self._track(lambda: self._run(cell))
        self.progress.started(cell.label, cell.id, self.store.cell_dir(cell.id))

    def evaluated(self, cell: Cell, evaluation: dict) -> None:
        self._track(lambda: self.tracker.log_evaluations(self._run(cell), cell.to_dict(), [evaluation]))

    def finished(self, cell: Cell, last: dict | None = None) -> None:
        """The cell's trial ended without an error; ``last`` is its last report (for a cell the
        scheduler stopped, which has no result of its own)."""
        result = self.store.result(cell.id)
        if result is None and self.early_stopping and cell.early_stoppable:
            # Recorded as a result, so a rerun does not train it again.
            last = last or {}
            result = {"status": "stopped", "reason": ASHA_STOPPED,
                      "last_selection_accuracy": last.get("selection_accuracy"),
                      "last_global_step": last.get("global_step")}
            self.store.write_result(cell, result)
            self.store.release(cell, keep_best_model=False)
        if result is None:
            self.failed(cell, "trial ended without a result")
            return
        self.failures.pop(cell.id, None)    # an earlier attempt failed; this one finished
        if self._track(lambda: self.tracker.record_cell(cell.to_dict(), self.invocation.parent, result=result,
                                                        cell_dir=self.store.cell_dir(cell.id))):
            self.invocation.recorded.add(cell.id)
            self._track(lambda: self.tracker.record_summaries(self.invocation.parent,
                                                              summary_rows(self.invocation.cells, self.store)))
        self.progress.finished(cell.label, cell.id)

    def failed(self, cell: Cell, reason: str) -> None:
        self.failures[cell.id] = reason
        self._track(lambda: self.tracker.record_cell(cell.to_dict(), self.invocation.parent, failure=reason))
        self.progress.failed_cell(cell.label, reason, cell.id)
