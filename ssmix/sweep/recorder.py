"""The one writer to a sweep's tracker during an invocation.

Every tracker call of an invocation goes through its ``Recorder``: one at a time (Tune's callback
thread, the main thread, a thread stopping the invocation), none once the invocation is closed (a
run touched after that would be RUNNING again), and under one failure policy. A transport error
(``TrackingUnavailable``) never stops training: the tracker is left alone for ``OFFLINE_SECONDS``,
and whatever it missed is stored and pushed by ``sync`` (at the end of the invocation, or later by
``ssmix sweep sync``). Any other error is a bug in our code and propagates with its traceback.

The recorder keeps what the invocation knows of the tracker: the parent run, the cells whose run
matches their stored result, the cells whose runs it opened, and the summary rows, which it
updates from each finished cell rather than from the whole store.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, TypeVar

from ssmix.sweep.aggregate import Summaries
from ssmix.sweep.cells import Cell, CellResult
from ssmix.sweep.invocations import InvocationRecord
from ssmix.sweep.tracker import Tracker, TrackingUnavailable

T = TypeVar("T")


class Recorder:
    OFFLINE_SECONDS = 15.0
    # Summary rows go out at most this often while cells finish (the rest when the invocation
    # ends or stops): with two drivers on one server, a push per finished cell doubled their time
    # in MLflow.
    SUMMARY_SECONDS = 5.0

    def __init__(self, tracker: Tracker, store):
        self.tracker, self.store = tracker, store
        self.parent: str | None = None
        self.recorded: set[str] = set()       # cells whose run matches their stored result
        self.started: dict[str, Cell] = {}    # cells this invocation started training
        self.summaries: Summaries | None = None
        self.seconds = 0.0                    # spent in tracker calls (the timing line)
        self._lock = threading.RLock()
        self._closed = False
        self._offline_until = 0.0
        self._summaries_pushed_at = float("-inf")

    # --------------------------------------------------------------------------- the invocation

    def open(self, cells: list[Cell], records: list[InvocationRecord]) -> None:
        """The sweep's parent run and the invocation log on it; the summaries as the store has
        them. The tracker must answer here: a sweep does not start without it."""
        self.parent = self.tracker.sweep_run()
        self.tracker.record_invocations(self.parent, records)
        self.summaries = Summaries.from_store(cells, self.store.snapshot())

    def plan(self, cells: list[Cell]) -> None:
        """Cells a search added to the plan (their budget curves wait for them)."""
        with self._lock:
            self.summaries.plan(cells)

    def sync(self, cells: list[Cell], wait_seconds: float = 0.0) -> list[Cell]:
        """Record every done cell whose run does not match its result yet (``record_cell`` is
        idempotent), retrying for up to ``wait_seconds`` while the tracker does not answer.
        Returns the cells left unrecorded."""
        deadline = time.monotonic() + wait_seconds
        left = [c for c in cells if c.id not in self.recorded and self.store.done(c.id) is not None]
        while True:
            failed = [cell for cell in left if not self._record(cell, self.store.done(cell.id), patient=True)]
            if not failed or time.monotonic() >= deadline:
                return failed
            left = failed
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))

    def push_summaries(self, changed_only: bool = True) -> bool:
        """The summary and aggregate runs the finished cells changed (or all of them)."""
        with self._lock:
            rows = self.summaries.rows(changed_only)
            if not rows:
                return True
            self._summaries_pushed_at = time.monotonic()
            ok = self.call(lambda: self.tracker.record_summaries(self.parent, rows), patient=True)
            if ok:      # rows MLflow did not take stay changed for the next push
                self.summaries.pushed()
            return ok

    def mark_superseded(self, planned_ids: set[str], plan_complete: bool) -> int | None:
        """How many runs belong to cells the plan no longer has (tagged), or None unanswered."""
        counted: list[int] = []
        ok = self.call(lambda: counted.append(self.tracker.mark_superseded(planned_ids, plan_complete)), patient=True)
        return counted[0] if ok else None

    def record_invocations(self, records: list[InvocationRecord]) -> bool:
        return self.call(lambda: self.tracker.record_invocations(self.parent, records), patient=True)

    def stop_runs(self, cell_ids: set[str], why: str) -> bool:
        """The runs of these cells still RUNNING become KILLED, tagged with why."""
        return self.call(lambda: self.tracker.stop_cell_runs(cell_ids, why), patient=True)

    def stop(self, unfinished: set[str], why: str, records: list[InvocationRecord]) -> bool:
        """The invocation stopped: the runs of its unfinished cells KILLED with why, the results
        its cells stored before the stop recorded, the log updated; then nothing more is written.
        Returns whether the tracker took it all."""
        with self._lock:
            ok = self.stop_runs(unfinished, why)
            ok = not self.sync(list(self.started.values())) and ok
            ok = self.push_summaries() and ok
            ok = self.record_invocations(records) and ok
            self._closed = True
            return ok

    def close(self) -> None:
        with self._lock:
            self._closed = True

    # ------------------------------------------------------------------------- cell events

    def cell_started(self, cell: Cell) -> None:
        self.started[cell.id] = cell
        self.call(lambda: self.tracker.start_cell(cell, self.parent))

    def cell_evaluated(self, cell: Cell, evaluation: dict) -> None:
        self.call(lambda: self.tracker.log_evaluation(cell, self.parent, evaluation))

    def cell_finished(self, cell: Cell, result: CellResult) -> None:
        """A done cell (finished, or stopped by the scheduler): its run, then the summary rows
        changed since the last push, unless that was under ``SUMMARY_SECONDS`` ago."""
        with self._lock:
            self.summaries.add(cell, result)
            if self._record(cell, result) and time.monotonic() - self._summaries_pushed_at >= self.SUMMARY_SECONDS:
                self.push_summaries()

    def cell_failed(self, cell: Cell, result: CellResult) -> None:
        self.call(lambda: self.tracker.record_cell(cell, self.parent, result))

    # ------------------------------------------------------------------------------ calls

    def _record(self, cell: Cell, result: CellResult, patient: bool = False) -> bool:
        ok = self.call(lambda: self.tracker.record_cell(cell, self.parent, result, self.store),
                       patient=patient)
        if ok:
            self.recorded.add(cell.id)
        return ok

    def call(self, write: Callable[[], object], patient: bool = False) -> bool:
        """Run one tracker call; False when it was not made (closed, or the tracker is away) or
        failed on transport. ``patient``: tried even inside the offline window (the closing
        steps, which retry on their own)."""
        with self._lock:
            if self._closed or (not patient and time.monotonic() < self._offline_until):
                return False
            began = time.perf_counter()
            try:
                write()
                return True
            except TrackingUnavailable as err:
                if time.monotonic() >= self._offline_until:
                    print(f"[sweep] an MLflow call failed ({err}); training goes on, results are kept in storage "
                          f"and pushed to MLflow when it answers again", flush=True)
                self._offline_until = time.monotonic() + self.OFFLINE_SECONDS
                return False
            finally:
                self.seconds += time.perf_counter() - began
