"""One ``ssmix sweep run`` or ``ssmix sweep sync``, from its first record to its exit code.

Both commands take the same steps, in this order, through one ``Invocation``: close the records of
drivers that died (and their RUNNING runs), begin a record, find the sweep's parent run, tag runs
the plan no longer has, push stored results the tracker lacks, keep the summary runs current, and
end the record with its counts. A run that ends early (Ctrl-C, SIGTERM, a crash, Ray lost) is
closed by ``stop``, whichever thread gets there first.

Storage is written first, because it is written even while the tracker is down; the tracker is
written only through the invocation's ``Recorder``.
"""

from __future__ import annotations

import threading

from ssmix.sweep.cells import Cell
from ssmix.sweep.invocations import InvocationRecord, Invocations
from ssmix.sweep.plan import plan_cells, plan_complete
from ssmix.sweep.recorder import Recorder
from ssmix.sweep.spec import SweepConfig, shown_uri
from ssmix.sweep.store import ResultStore
from ssmix.sweep.summary import format_summary, rows_for_summary
from ssmix.sweep.tracker import Tracker

EXIT_OK, EXIT_FAILED_CELLS, EXIT_UNTRACKED, EXIT_RAY_LOST = 0, 1, 3, 4
EXIT_INTERRUPTED = 130    # the shell's code for a Ctrl-C


class Invocation:
    def __init__(self, sweep: SweepConfig, sweep_file: str, store: ResultStore, tracker: Tracker):
        self.sweep, self.sweep_file, self.store = sweep, sweep_file, store
        self.log = Invocations(store.storage)
        self.recorder = Recorder(tracker, store)
        self.record: InvocationRecord | None = None
        self.cells: list[Cell] = []
        self._stop_lock = threading.Lock()
        self._superseded = -1                   # the count last told to the user

    @property
    def number(self) -> int | None:
        return None if self.record is None else self.record.number

    @property
    def closed(self) -> bool:
        return self.record is None or not self.record.running

    def begin(self, command: str, cells: list[Cell]) -> None:
        self.cells = cells
        closed = self.log.close_interrupted()
        self.record = self.log.begin(command, self.sweep_file, len(cells))
        self.recorder.open(cells, self.log.read())
        if closed:
            self._close_dead(closed)
        self.mark_superseded()

    def _close_dead(self, closed: list[InvocationRecord]) -> None:
        """Earlier invocations whose driver died were closed as killed; when no other invocation
        is alive, the runs their cells left RUNNING become KILLED (nothing will finish them)."""
        if any(r.running and r.number != self.number for r in self.log.read()):
            return
        numbers = ", ".join(f"#{r.number}" for r in closed)
        unfinished = {c.id for c in self.cells if self.store.done(c.id) is None}
        self.recorder.stop_runs(unfinished, f"invocation {numbers} was killed before this cell finished")

    def mark_superseded(self) -> None:
        """Tags true to the plan as it stands (``Tracker.mark_superseded``); says so when the
        count is new."""
        count = self.recorder.mark_superseded({c.id for c in self.cells}, plan_complete(self.sweep, self.store))
        if count and count != self._superseded:
            print(f"[sweep] {count} MLflow run(s) belong to cells this file no longer plans (other settings or "
                  f"code): tagged ssmix.superseded and left out of the report; `ssmix sweep gc` archives them",
                  flush=True)
        if count is not None:
            self._superseded = count

    def replan(self, code: str) -> None:
        """A search's proposals and confirmations became cells while the sweep ran."""
        self.cells = plan_cells(self.sweep, code, self.store)
        self.recorder.plan(self.cells)

    def counts(self, view: ResultStore | None = None) -> dict:
        store = view or self.store
        return {"planned": len(self.cells), "finished": sum(store.finished(c.id) is not None for c in self.cells)}

    def end(self, counts: dict, summary: str, reason: str = "") -> bool:
        """Close the record (failed when ``reason`` says why) and mirror it and the summaries to
        the tracker. Returns whether the tracker took them."""
        with self._stop_lock:
            # A driver found alive at the start may have died since: on object storage its lease
            # outlives it, so a rerun started at once sees it running until the lease runs out.
            died = self.log.close_interrupted()
            self.record = self.log.end(self.number, "failed" if reason else "finished", counts, summary, reason=reason)
            if died:
                self._close_dead(died)
            ok = self.recorder.push_summaries() and self.recorder.record_invocations(self.log.read())
            self.recorder.close()
            return ok

    def stop(self, status: str, why: str) -> int | None:
        """Record the invocation as ``status`` and its unfinished cells' runs as KILLED: storage
        first (``ray job stop`` sends SIGKILL 3 s after SIGTERM), then the tracker. A cell that
        stored its result before the stop but whose finished event never came (its trial ended as
        Ray was lost) gets its result recorded. Returns how many cells it stopped, or None when
        the invocation was already closed."""
        with self._stop_lock:
            if self.closed:
                return None
            unfinished = {cid for cid in self.recorder.started if self.store.done(cid) is None}
            self.record = self.log.end(self.number, status, {**self.counts(), "stopped": len(unfinished)}, "",
                                       reason=why)
            if not self.recorder.stop(unfinished, f"invocation #{self.number} stopped before this cell finished: "
                                                  f"{why}", self.log.read()):
                print("[sweep] MLflow could not be told that the invocation ended; `ssmix sweep sync` records it "
                      "later", flush=True)
            return len(unfinished)


def sync_sweep(sweep: SweepConfig, sweep_file: str, tracker: Tracker) -> int:
    """``ssmix sweep sync``: make the tracker match the store (after an outage): every cell's run,
    the summary runs, and the invocation log (an interrupted invocation is closed as killed);
    trains nothing."""
    store = ResultStore.for_sweep(sweep)
    invocation = Invocation(sweep, sweep_file, store, tracker)
    invocation.begin("sync", plan_cells(sweep, store=store))
    before = store.snapshot()
    done = [c for c in invocation.cells if before.done(c.id) is not None]
    left = invocation.recorder.sync(done)
    view = store.snapshot()
    counts = {**invocation.counts(view), "recorded": len(done) - len(left)}
    invocation.recorder.push_summaries(changed_only=False)
    ok = invocation.end(counts, format_summary(rows_for_summary(invocation.cells, view)),
                        reason=f"{len(left)} cell(s) could not be recorded" if left else "")
    print(f"[sweep] synced {len(done) - len(left)} of {len(done)} stored result(s) to {shown_uri(sweep.tracking)}"
          + (f"; {len(left)} failed" if left else ""))
    return EXIT_UNTRACKED if left or not ok else EXIT_OK
