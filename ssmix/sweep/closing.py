"""The start and the end of ``ssmix sweep run``, whatever runs the cells (Tune, or the in-process
runner): ``open_run`` plans, begins the invocation and says what is to train; ``close_run``
pushes what MLflow lacks, prints the results table, where the time went and what failed, closes
the invocation, and says where to look next."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ssmix.sweep.cells import Cell
from ssmix.sweep.events import CellEvents
from ssmix.sweep.invocation import EXIT_FAILED_CELLS, EXIT_OK, EXIT_UNTRACKED, Invocation
from ssmix.sweep.plan import cells_to_train, plan_cells
from ssmix.sweep.schedule import CellQueue
from ssmix.sweep.spec import default_tracking_uri, shown_uri
from ssmix.sweep.store import StoreSnapshot
from ssmix.sweep.summary import describe_best, format_summary, rows_for_summary, timing_summary


@dataclass
class Ran:
    """What one invocation ran: the cells it was asked to train (or started), why the ones that
    could not run were blocked, how many could run at once, and when it began."""
    pending: set[str]
    blocked: dict[str, str] = field(default_factory=dict)
    concurrency: int = 1
    on_ray: bool = True        # the timing line explains Ray's and Tune's share of the time
    began: float = field(default_factory=time.perf_counter)


def open_run(invocation: Invocation, code: str, how: str = "") -> tuple[list[Cell], list[Cell]]:
    """The sweep's cells and those to train; the invocation begun, and the cells an earlier one
    finished but left out of MLflow (a killed driver, an outage) pushed now."""
    cells = plan_cells(invocation.sweep, code, invocation.store)
    pending = cells_to_train(cells, invocation.store.snapshot())
    invocation.begin("run", cells)
    to_train = {c.id for c in pending}
    invocation.recorder.sync([c for c in cells if c.id not in to_train])
    invocation.recorder.push_summaries()
    print(f"[sweep] {invocation.sweep.name}: {len(cells)} cells, {len(cells) - len(pending)} already done, "
          f"{len(pending)} to train{how}", flush=True)
    return cells, pending


def cell_queue(cells: list[Cell], pending: list[Cell], costs: dict[str, float]) -> CellQueue:
    """The queue of ``pending``; phase-1 cells done before need no training for their phase 2s."""
    waiting = {c.id for c in pending}
    return CellQueue(pending, costs, satisfied={c.id for c in cells if c.kind == "phase1" and c.id not in waiting})


def close_run(invocation: Invocation, events: CellEvents, ran: Ran, code: str) -> int:
    sweep, store = invocation.sweep, invocation.store
    invocation.replan(code)     # a search's proposals and confirmations are cells now
    cells, recorder = invocation.cells, invocation.recorder
    unsynced = recorder.sync(cells, wait_seconds=sweep.tracking_retry_seconds)
    if not unsynced:   # the plan may have completed while the sweep ran (a search's confirmation)
        invocation.mark_superseded()
    view = store.snapshot()         # every result read once, not once per question
    missing = [c for c in cells if view.done(c.id) is None]
    summary = format_summary(rows_for_summary(cells, view))
    if sweep.search is not None:
        summary = describe_best(sweep, view) + "\n\n" + summary
    print("\n" + summary)
    trained = [c for c in cells if c.id in events.trained and view.finished(c.id) is not None]
    _print_timing(view, events, ran, trained, invocation.recorder.seconds)
    _print_missing(missing, events, ran)
    counts = {**invocation.counts(view), "trained": len(trained), "failed": len(missing)}
    if unsynced:
        counts["not_in_mlflow"] = len(unsynced)
    reason = ("MLflow did not answer" if unsynced else "") or (f"{len(missing)} cell(s) failed" if missing else "")
    if not invocation.end(counts, summary, reason=reason):
        unsynced = unsynced or [c for c in cells if c.id not in recorder.recorded and store.done(c.id) is not None]
    if unsynced:
        print(f"\n[sweep] MLflow at {shown_uri(sweep.tracking)} did not answer for {sweep.tracking_retry_seconds:g} s: "
              f"{len(unsynced)} cell(s) are trained and stored under {store.url} but not in MLflow. "
              f"When it is back: ssmix sweep sync {invocation.sweep_file}")
        return EXIT_UNTRACKED
    _print_pointers(invocation)
    return EXIT_FAILED_CELLS if missing else EXIT_OK


def _print_timing(view: StoreSnapshot, events: CellEvents, ran: Ran, trained: list[Cell],
                  mlflow_seconds: float) -> None:
    if not ran.pending:
        return
    timing = timing_summary(trained, view, time.perf_counter() - ran.began,
                            min(len(trained) or 1, ran.concurrency), launched=events.launched if ran.on_ray else None,
                            mlflow_seconds=mlflow_seconds, on_ray=ran.on_ray)
    if timing:
        print("\n" + timing)


def _print_missing(missing: list[Cell], events: CellEvents, ran: Ran) -> None:
    if not missing:
        return
    print(f"\n[sweep] {len(missing)} cell(s) failed or have no result:")
    for cell in missing:
        why = events.failures.get(cell.id) or ran.blocked.get(cell.id) or "not trained"
        print(f"  {cell.label}: {why}")


UI_ADDRESS = "http://127.0.0.1:5000"     # where `ui_command` serves a file store's UI


def ui_command(tracking_uri: str) -> str:
    tracking_uri = shown_uri(tracking_uri)
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri}"
    return f"mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port {UI_ADDRESS.rsplit(':', 1)[1]}"


def ui_address(tracking_uri: str) -> str:
    """Where the MLflow UI of a tracking URI is: the server itself, or `ui_command`'s."""
    return tracking_uri if tracking_uri.startswith(("http://", "https://")) else UI_ADDRESS


def _print_pointers(invocation: Invocation) -> None:
    sweep = invocation.sweep
    uri_flag = "" if sweep.tracking == default_tracking_uri() else f" --tracking-uri {shown_uri(sweep.tracking)}"
    pointers = [("the MLflow UI", f"{ui_command(sweep.tracking)}   (experiment '{sweep.name}')"),
                ("Table 2 in MLflow", invocation.recorder.tracker.table2_link(ui_address(shown_uri(sweep.tracking)))),
                ("the report", f"ssmix report {sweep.name}{uri_flag} --out report/{sweep.name}")]
    if sweep.search is not None:
        pointers.append(("the best configuration", f"ssmix sweep best {invocation.sweep_file}"))
    print()
    for i, (what, command) in enumerate(pointers):
        print(f"{'Next:' if i == 0 else '':<6}{what:<24}{command}")
