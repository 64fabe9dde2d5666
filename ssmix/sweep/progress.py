"""The sweep's progress as a person reads it.

Events (a cell started, finished, failed, blocked) are one line each. Between events, each running
cell's phase, step / total and estimated time left come from the small progress file its trial
writes on storage (``cells/<id>/progress.json``, at most every second on a shared directory, every
five on an object store): on a terminal a live
table redrawn in place (rich), elsewhere (``ray job logs``, CI, a pipe) one plain line every
``SSMIX_PROGRESS_SECONDS`` (default 30).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Callable

PROGRESS_FILE = "progress.json"


class StepWriter:
    """In the trial: records (phase, step, total) to the cell's progress file, throttled."""

    def __init__(self, store, cell_id: str, every: float | None = None):
        self.store, self.cell_id, self.last = store, cell_id, 0.0
        self.every = store.progress_every if every is None else every

    def __call__(self, phase: str, step: int, total: int) -> None:
        now = time.time()
        if now - self.last >= self.every or step == total:
            self.last = now
            self.store.write_cell_file(self.cell_id, PROGRESS_FILE,
                                       json.dumps({"phase": phase, "step": step, "total": total, "at": now}))


def read_step(store, cell_id: str) -> dict | None:
    try:
        text = store.read_cell_file(cell_id, PROGRESS_FILE)
        return json.loads(text) if text else None
    except (OSError, ValueError):
        return None


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """Counts are sets of cell ids, not tallies of callbacks: a cell Tune retries is started
    twice but runs once, and a retry after a failure is running again, not failed."""

    def __init__(self, total: int, done_before: int, live: bool | None = None, plain_every: float | None = None,
                 costs: dict[str, float] | None = None):
        """costs: the estimated cost of every cell to train (``ssmix.sweep.schedule.cell_costs``);
        with them the counts end with the time left for the whole sweep."""
        self.total, self.done_before = total, done_before
        self.costs = costs or {}
        self.began = time.time()
        self.done_ids: set[str] = set()
        self.failed_ids: set[str] = set()
        self.blocked_ids: set[str] = set()
        self.cells: dict[str, tuple[str, Callable[[], dict | None], float]] = {}   # running: id -> (label,
        #                                                                            its step's reader, started)
        self.first_step: dict[str, tuple[float, int, str]] = {}   # id -> (time, step, phase) first seen
        self.live_mode = sys.stdout.isatty() if live is None else live
        self.plain_every = plain_every if plain_every is not None else float(os.environ.get("SSMIX_PROGRESS_SECONDS", 30))
        self.last_plain = time.time()
        self._live = None

    @property
    def done(self) -> int:
        return self.done_before + len(self.done_ids)

    @property
    def running(self) -> int:
        return len(self.cells)

    @property
    def failed(self) -> int:
        return len(self.failed_ids - self.done_ids - set(self.cells))

    @property
    def blocked(self) -> int:
        return len(self.blocked_ids)

    # --------------------------------------------------------------------------------- events

    def started(self, label: str, cell_id: str, read_step: Callable[[], dict | None] = lambda: None) -> None:
        """``read_step``: the cell's latest (phase, step, total), as its trial wrote it."""
        self.cells[cell_id] = (label, read_step, time.time())
        self._line("started", label)

    def finished(self, label: str, cell_id: str) -> None:
        self.done_ids.add(cell_id)
        self._forget(cell_id)
        self._line("finished", label)

    def failed_cell(self, label: str, reason: str, cell_id: str) -> None:
        self.failed_ids.add(cell_id)
        self._forget(cell_id)
        self._line(f"FAILED ({reason[:200]})", label)

    def blocked_cell(self, label: str, reason: str, cell_id: str) -> None:
        self.blocked_ids.add(cell_id)
        self._line(f"blocked ({reason[:200]})", label)

    def _forget(self, cell_id: str) -> None:
        self.cells.pop(cell_id, None)
        self.first_step.pop(cell_id, None)

    def counts(self) -> str:
        pending = max(0, self.total - self.done - self.running - self.failed - self.blocked)
        left = self.sweep_left()
        return (f"cells done {self.done}, running {self.running}, pending {pending}, failed {self.failed}"
                + (f", blocked {self.blocked}" if self.blocked else "")
                + (f", about {_duration(left)} left" if left is not None else ""))

    def sweep_left(self, now: float | None = None) -> float | None:
        """Seconds left for the whole sweep: the estimated cost still to train over the cost
        trained per second so far (running cells count by their step / total). None until a cell
        has finished, or without cost estimates (a search adds cells as it goes)."""
        if not self.costs or not (self.done_ids | self.failed_ids) & set(self.costs):
            return None
        spent = sum(self.costs.get(i, 0.0) for i in self.done_ids | self.failed_ids)
        for cell_id, (_, reader, _) in self.cells.items():
            step = reader()
            if step and step["total"]:
                spent += self.costs.get(cell_id, 0.0) * min(1.0, step["step"] / step["total"])
        elapsed = (now or time.time()) - self.began
        if spent <= 0 or elapsed <= 0:
            return None
        return max(0.0, sum(self.costs.values()) - spent) * elapsed / spent

    def _line(self, event: str, label: str) -> None:
        self._print(f"[sweep] {event}: {label} | {self.counts()}")

    def _print(self, text: str) -> None:
        if self._live is not None:
            self._live.console.print(text, markup=False, highlight=False)
        else:
            print(text, flush=True)

    # ------------------------------------------------------------------------ inside trials

    def steps(self) -> list[tuple[str, str]]:
        """(label, "phase1 step 40/80, 35s left") for every running cell that has reported a step."""
        rows = []
        for cell_id, (label, reader, _) in list(self.cells.items()):
            step = reader()
            if step is None:
                continue
            first = self.first_step.get(cell_id)
            if first is None or first[2] != step["phase"] or step["step"] < first[1]:
                first = self.first_step[cell_id] = (step["at"], step["step"], step["phase"])
            text = f"{step['phase']} step {step['step']}/{step['total']}"
            if step["step"] > first[1] and step["at"] > first[0]:
                rate = (step["step"] - first[1]) / (step["at"] - first[0])
                text += f", {_duration((step['total'] - step['step']) / rate)} left"
            rows.append((label, text))
        return rows

    def refresh(self) -> None:
        """Called often by the driver: redraw the live table, or print a plain line when due."""
        if self.live_mode:
            self._refresh_live()
        elif time.time() - self.last_plain >= self.plain_every:
            self.last_plain = time.time()
            rows = self.steps()
            if rows:
                self._print(f"[sweep] progress: {self.counts()} | " + " | ".join(f"{label}: {text}" for label, text in rows))

    def _refresh_live(self) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.table import Table

        table = Table(title=self.counts(), title_justify="left", box=None, show_header=False)
        for label, text in self.steps():
            table.add_row(label, text)
        if self._live is None:
            self._live = Live(table, console=Console(), refresh_per_second=2, transient=True)
            self._live.start()
        else:
            self._live.update(table)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
