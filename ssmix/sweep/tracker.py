"""What the sweep service asks of an experiment tracker: the ``Tracker`` protocol
(``ssmix.tracking.SweepTracker`` is MLflow's), and the one error it may raise for an outage.

The service never imports mlflow: it is handed a tracker, and writes to it only through its
``Recorder`` (``ssmix.sweep.recorder``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Protocol

if TYPE_CHECKING:
    from ssmix.sweep.aggregate import SummaryRow
    from ssmix.sweep.cells import Cell, CellResult
    from ssmix.sweep.invocations import InvocationRecord
    from ssmix.sweep.store import ResultStore


class TrackingUnavailable(ConnectionError):
    """The tracking server did not answer, or answered with an error of its own (a transport
    error). A sweep keeps training through it: results stay on storage, and are pushed when it
    answers again (or by ``ssmix sweep sync``). Any other error is a bug and is not caught."""


class Tracker(Protocol):
    def sweep_run(self) -> str:
        """The sweep's one parent run (created by the first invocation)."""

    def record_invocations(self, parent_run_id: str, records: list[InvocationRecord]) -> None:
        """The invocation log on the parent run; its status the latest invocation's."""

    def start_cell(self, cell: Cell, parent_run_id: str | None) -> None:
        """The cell's one run, created or reattached, marked RUNNING."""

    def log_evaluation(self, cell: Cell, parent_run_id: str | None, evaluation: dict) -> None:
        """One evaluation of a running cell, as metrics at its global step."""

    def record_cell(self, cell: Cell, parent_run_id: str | None, result: CellResult,
                    store: ResultStore | None = None) -> bool:
        """Make the cell's run match its result (finished, stopped or failed), with the cell's
        files from ``store`` as artifacts; idempotent. Returns False when it already matched."""

    def stop_cell_runs(self, cell_ids: Iterable[str], reason: str) -> list[str]:
        """Runs of these cells still RUNNING become KILLED, tagged with why."""

    def mark_superseded(self, planned_ids: set[str], plan_complete: bool) -> int:
        """Tag the runs of cells the plan no longer has; returns how many there are."""

    def record_summaries(self, parent_run_id: str, rows: list[SummaryRow]) -> None:
        """One run per summary or aggregate row, created once, updated when it changed."""

    def table2_link(self, ui_address: str) -> str:
        """The tracker UI's address of the sweep opened on Table 2."""
