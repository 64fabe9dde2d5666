"""One ``ssmix sweep run`` or ``ssmix sweep sync``, from its first record to its exit code.

Both commands take the same steps, in this order, through one ``Invocation``: close the records of
drivers that died (and their RUNNING runs), begin a record, find the sweep's parent run, tag runs
the plan no longer has, push stored results MLflow lacks, keep the summary runs current, and end
the record with its counts. A run that ends early (Ctrl-C, SIGTERM, a crash, Ray lost) is closed
by ``stop``, whichever thread gets there first.

MLflow is reached only through the ``tracker`` handed in (``ssmix.tracking.SweepTracker``), so
this module imports no mlflow; storage is written first, because it is written even while MLflow
is down.
"""

from __future__ import annotations

import threading
import time

from ssmix.sweep.aggregate import summary_rows
from ssmix.sweep.invocations import Invocations
from ssmix.sweep.plan import Cell, plan_cells, plan_complete
from ssmix.sweep.spec import SweepConfig
from ssmix.sweep.store import ResultStore
from ssmix.sweep.summary import format_summary, rows_for_summary

EXIT_OK, EXIT_FAILED_CELLS, EXIT_UNTRACKED, EXIT_RAY_LOST = 0, 1, 3, 4
EXIT_INTERRUPTED = 130    # the shell's code for a Ctrl-C


class Invocation:
    def __init__(self, sweep: SweepConfig, sweep_file: str, store: ResultStore, tracker):
        self.sweep, self.sweep_file, self.store, self.tracker = sweep, sweep_file, store, tracker
        self.log = Invocations(store.root)
        self.record: dict | None = None
        self.parent: str | None = None          # the sweep's MLflow parent run
        self.cells: list[Cell] = []
        self.started: set[str] = set()          # cells this invocation started training
        self.recorded: set[str] = set()         # cells whose MLflow run matches their result
        self.mlflow_lock = threading.RLock()    # every MLflow write of a live run holds it
        self._stop_lock = threading.Lock()
        self._superseded = -1                   # the count last told to the user

    @property
    def number(self) -> int | None:
        return None if self.record is None else self.record["number"]

    @property
    def closed(self) -> bool:
        return self.record is None or self.record["status"] != "running"

    def begin(self, command: str, cells: list[Cell]) -> None:
        self.cells = cells
        self._close_dead()
        self.record = self.log.begin(command, self.sweep_file, len(cells))
        self.parent = self.tracker.sweep_run(self.sweep.name)
        self.tracker.record_invocations(self.parent, self.log.read())
        self.mark_superseded()

    def _close_dead(self) -> None:
        """Earlier invocations whose driver died are closed as killed, and, when no other invocation
        is alive, the runs their cells left RUNNING become KILLED (nothing will finish them)."""
        closed = self.log.close_interrupted()
        if closed and not any(r["status"] == "running" for r in self.log.read()):
            numbers = ", ".join(f"#{r['number']}" for r in closed)
            try:
                self.tracker.stop_cell_runs({c.id for c in self.cells if self.store.result(c.id) is None},
                                            f"invocation {numbers} was killed before this cell finished")
            except Exception:
                pass    # MLflow is away: these runs stay RUNNING until the cell is trained and recorded

    def mark_superseded(self) -> int:
        """Tags true to the plan as it stands (``SweepTracker.mark_superseded``); says so when the
        count is new."""
        count = self.tracker.mark_superseded({c.id for c in self.cells}, plan_complete(self.sweep, self.store))
        if count and count != self._superseded:
            print(f"[sweep] {count} MLflow run(s) belong to cells this file no longer plans (other settings or "
                  f"code): tagged ssmix.superseded and left out of the report; `ssmix sweep gc` archives them",
                  flush=True)
        self._superseded = count
        return count

    def replan(self, code: str) -> None:
        """A search's proposals and confirmations became cells while the sweep ran."""
        self.cells = plan_cells(self.sweep, code, self.store)

    def sync(self, cells: list[Cell], wait_seconds: float = 0.0) -> list[Cell]:
        """Record every stored result whose run does not match it yet (``record_cell``, idempotent);
        retry for up to ``wait_seconds`` while the server does not answer. Returns the cells still
        unrecorded."""
        deadline = time.monotonic() + wait_seconds
        left = [c for c in cells if c.id not in self.recorded and self.store.result(c.id) is not None]
        while True:
            failed = []
            for cell in left:
                try:
                    self.tracker.record_cell(cell.to_dict(), self.parent, result=self.store.result(cell.id),
                                             cell_dir=self.store.cell_dir(cell.id))
                    self.recorded.add(cell.id)
                except Exception:
                    failed.append(cell)
            if not failed or time.monotonic() >= deadline:
                return failed
            left = failed
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))

    def record_summaries(self) -> None:
        self.tracker.record_summaries(self.parent, summary_rows(self.cells, self.store))

    def counts(self) -> dict:
        return {"planned": len(self.cells),
                "finished": sum(self.store.finished(c.id) is not None for c in self.cells)}

    def end(self, counts: dict, summary: str, reason: str = "") -> bool:
        """Close the record (failed when ``reason`` says why) and mirror it and the summaries to
        MLflow. Returns whether MLflow took them."""
        self.log.end(self.record, "failed" if reason else "finished", counts, summary, reason=reason)
        try:
            self.record_summaries()
            self.tracker.record_invocations(self.parent, self.log.read())
            return True
        except Exception:
            return False

    def stop(self, status: str, why: str) -> int | None:
        """Record the invocation as ``status`` and its unfinished cells' runs as KILLED: storage
        first (``ray job stop`` sends SIGKILL 3 s after SIGTERM), then MLflow. A cell that stored
        its result before the stop but whose finished event never came (its trial ended as Ray was
        lost) gets its result recorded. Returns how many cells it stopped, or None when the
        invocation was already closed."""
        with self._stop_lock, self.mlflow_lock:
            if self.closed:
                return None
            unfinished = {cid for cid in self.started if self.store.result(cid) is None}
            self.log.end(self.record, status, {**self.counts(), "stopped": len(unfinished)}, "", reason=why)
            try:
                self.tracker.stop_cell_runs(unfinished, f"invocation #{self.number} stopped before this cell "
                                                        f"finished: {why}")
                self.sync([c for c in self.cells if c.id in self.started])
                self.tracker.record_invocations(self.tracker.sweep_run(self.sweep.name), self.log.read())
            except Exception as err:    # MLflow is away: the next invocation or `ssmix sweep sync` mirrors it
                print(f"[sweep] MLflow could not be told that the invocation ended ({type(err).__name__}: "
                      f"{str(err)[:200]}); `ssmix sweep sync` records it later", flush=True)
            return len(unfinished)


def sync_sweep(sweep: SweepConfig, sweep_file: str, tracker) -> int:
    """``ssmix sweep sync``: make MLflow match the store (after an outage): every cell's run, the
    summary runs, and the invocation log (an interrupted invocation is closed as killed); trains
    nothing."""
    store = ResultStore(sweep.sweep_dir())
    invocation = Invocation(sweep, sweep_file, store, tracker)
    invocation.begin("sync", plan_cells(sweep, store=store))
    done = [c for c in invocation.cells if store.result(c.id) is not None]
    left = invocation.sync(done)
    invocation.record_summaries()
    counts = {**invocation.counts(), "recorded": len(done) - len(left)}
    invocation.end(counts, format_summary(rows_for_summary(invocation.cells, store)),
                   reason=f"{len(left)} cell(s) could not be recorded" if left else "")
    print(f"[sweep] synced {len(done) - len(left)} of {len(done)} stored result(s) to {sweep.tracking}"
          + (f"; {len(left)} failed" if left else ""))
    return EXIT_UNTRACKED if left else EXIT_OK
