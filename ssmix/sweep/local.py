"""Running a sweep's cells in this process, one after another, without Ray: the same queue,
search feeder, cell events, invocation and closing as the Tune driver, so the service's logic
(dependency order, exactly once, search proposals, the invocation log, the MLflow layout) is
tested in seconds, and a sweep can be debugged with a plain debugger (``ssmix sweep run
--in-process``). What it cannot do is what needs Ray: run cells at once, retry a failed trial
(``max_failures``), or stop cells early (the ``scheduler`` block is ignored, and it says so).

Training is handed in: ``train(cell, report, claimed)`` trains one cell and stores its result,
calling ``claimed()`` once it holds the cell's claim and ``report(evaluation)`` after each
evaluation (``ssmix.cell_training.train_claimed_cell``), and returns whether it trained the cell
(False: another driver stored the result first), so this module imports no torch.
"""

from __future__ import annotations

from typing import Callable

from ssmix.sweep.cells import Cell
from ssmix.sweep.closing import Ran, cell_queue, close_run, open_run
from ssmix.sweep.events import CellEvents
from ssmix.sweep.feeder import SearchFeeder
from ssmix.sweep.invocation import EXIT_INTERRUPTED, Invocation
from ssmix.sweep.plan import code_version
from ssmix.sweep.progress import Progress
from ssmix.sweep.schedule import CellQueue, cell_costs

TrainFn = Callable[[Cell, Callable[[dict], None], Callable[[], None]], bool]


def run_in_process(invocation: Invocation, train: TrainFn) -> int:
    """Train every cell of the invocation's sweep without a finished result; the exit status as
    ``ssmix sweep run`` gives it."""
    sweep, store = invocation.sweep, invocation.store
    ran, code = Ran(pending=set(), on_ray=False), code_version()
    try:
        if sweep.scheduler is not None:
            print("[sweep] in process: the scheduler block is ignored (early stopping needs Ray)", flush=True)
        cells, pending = open_run(invocation, code, " (in process, one at a time)")
        ran.pending = {c.id for c in pending}
        costs = cell_costs(pending)
        progress = Progress(len(cells), len(cells) - len(pending), live=False)
        events = CellEvents(store, invocation.recorder, progress, early_stopping=False)
        queue = cell_queue(cells, pending, costs)
        feeder = SearchFeeder(sweep, store, queue, progress, code)
        _drain(queue, feeder, events, train)
        progress.close()
        ran.pending |= queue.started
        ran.blocked = queue.blocked
        return close_run(invocation, events, ran, code)
    except KeyboardInterrupt as err:
        stopped = invocation.stop("killed", f"interrupted ({err or 'Ctrl-C'})")
        if stopped is None:     # stopped after the invocation was recorded as ended: nothing to stop
            raise
        print(f"\n[sweep] interrupted: {stopped} running cell(s) stopped, recorded as killed.", flush=True)
        return EXIT_INTERRUPTED
    except BaseException as err:     # a bug, or an error a user can cause: recorded, then raised as it is
        invocation.stop("failed", f"{type(err).__name__}: {err}"[:500])
        raise


def _drain(queue: CellQueue, feeder: SearchFeeder, events: CellEvents, train: TrainFn) -> None:
    """Train ready cells until none is left: in this process nothing else is running, so a cell
    that is not ready now never will be (its phase 1 failed: the queue blocked it)."""
    store = events.store
    while True:
        feeder.top_up()
        cell = queue.pop(elsewhere=lambda c: store.claimed(c.id))
        if cell is None:
            return
        if not store.needs_training(cell):      # another driver of the file stored it meanwhile
            events.finished(cell, trained_here=False)
        else:       # its run starts once the claim is held: not while a peer trains the cell
            try:
                trained_here = train(cell, lambda evaluation, cell=cell: events.evaluated(cell, evaluation),
                                     lambda cell=cell: events.started(cell))
            except Exception as err:
                events.failed(cell, f"{type(err).__name__}: {err}"[:2000])
            else:
                events.finished(cell, trained_here=trained_here)
        ok = store.finished(cell.id) is not None
        for blocked in queue.complete(cell.id, ok, "" if ok else "no result"):
            events.progress.blocked_cell(blocked.label, queue.blocked[blocked.id], blocked.id)
