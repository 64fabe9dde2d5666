"""Which cell runs next: dependency-driven, in one queue, shared by the Tune searcher (the driver)
and by ``ssmix sweep plan --workers N`` (a simulation of the same order on N equal workers).

A phase-2 cell is ready the moment its own phase-1 cell has finished; a failed phase-1 cell
blocks its phase-2 cells, with the reason, and nothing else. Among ready cells:

1. *quick tasks first*: the tasks with the smallest columns (all their cells' work), smallest
   first, as long as together they hold at most ``QUICK_SHARE`` of the sweep's work. Their results
   arrive at once, and they delay the rest by at most that share.
2. then *the longest chain first*: a phase-1 cell counts its own work plus its longest phase-2
   cell (it unlocks that), a phase-2 cell its own. Critical-path-first keeps the makespan near
   its lower bound max(total work / workers, longest chain).

Costs are estimates: training examples x tokens per example x epochs x the method's step cost
relative to a plain step (a mixup step processes twice the examples: 2, or the figures of
``ssmix bench step --json``). Evaluation is not counted.
"""

from __future__ import annotations

import heapq
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ssmix.methods import METHODS
from ssmix.sweep.cells import Cell
from ssmix.sweep.plan import dependents
from ssmix.tasks import TASKS, TaskSpec

QUICK_SHARE = 0.02
MIXUP_STEP_COST = 2.0      # docs/method.md §5: the floor of a mixup step, twice the examples of a plain step
UNKNOWN_TASK_EXAMPLES = 10_000


def default_step_costs() -> dict[str, float]:
    return {name: 1.0 if method.kind == "plain" else MIXUP_STEP_COST for name, method in METHODS.items()}


def step_costs_from_bench(path: str | Path) -> dict[str, float]:
    """Step costs relative to ``none`` from a ``ssmix bench step --json`` file."""
    try:
        rows = json.loads(Path(path).read_text())["steps"]
        measured = {row["method"]: float(row["vs_none"]) for row in rows if row["method"] in METHODS}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a `ssmix bench step --json` file ({err})") from None
    return {**default_step_costs(), **measured}


def _train_rows(spec: TaskSpec) -> int:
    if spec.train_examples:
        return spec.train_examples
    rows = 0
    for split in spec.train_splits:   # a custom task: count its file's lines
        path = Path((spec.data_files or {}).get(split, ""))
        if path.is_file():
            with open(path, "rb") as handle:
                rows += sum(1 for _ in handle) - (1 if path.suffix == ".csv" else 0)
    return rows or UNKNOWN_TASK_EXAMPLES


def cell_cost(cell: Cell, step_costs: dict[str, float]) -> float:
    """Work of one cell in token-examples (the unit is the same for every cell)."""
    trial = cell.trial
    spec = TaskSpec(**trial["task"]) if isinstance(trial["task"], dict) else TASKS[trial["task"]]
    examples = _train_rows(spec) * trial["train_fraction"]
    if trial["max_train_examples"]:
        examples = min(examples, trial["max_train_examples"])
    tokens = trial["pad_to"] or min(spec.mean_tokens or trial["max_length"] / 2, trial["max_length"])
    phase = trial[cell.kind]
    steps = math.ceil(examples / trial["batch_size"]) * phase["epochs"]
    if phase["max_steps"]:
        steps = min(steps, phase["max_steps"])
    method = cell.method if cell.kind == "phase2" else "none"
    return steps * trial["batch_size"] * tokens * step_costs[method]


def cell_costs(cells: list[Cell], step_costs: dict[str, float] | None = None) -> dict[str, float]:
    step_costs = step_costs or default_step_costs()
    return {c.id: cell_cost(c, step_costs) for c in cells}


def chain_lengths(cells: list[Cell], costs: dict[str, float]) -> dict[str, float]:
    after = dependents(cells)
    return {c.id: costs[c.id] + (max((costs[d.id] for d in after.get(c.id, [])), default=0.0)
                                 if c.kind == "phase1" else 0.0) for c in cells}


def priorities(cells: list[Cell], costs: dict[str, float]) -> dict[str, tuple]:
    """A sort key per cell (smaller runs first): quick tasks' columns first, then longest chain."""
    column: dict[str, float] = defaultdict(float)
    for cell in cells:
        column[cell.task] += costs[cell.id]
    total = sum(column.values())
    quick, spent = {}, 0.0
    for task in sorted(column, key=lambda t: column[t]):
        if spent + column[task] > QUICK_SHARE * total:
            break
        spent += column[task]
        quick[task] = column[task]
    chain = chain_lengths(cells, costs)
    return {c.id: ((0, quick[c.task], -chain[c.id], i) if c.task in quick else (1, 0.0, -chain[c.id], i))
            for i, c in enumerate(cells)}


class CellQueue:
    """The cells still to train, which of them are ready, running, or blocked.

    satisfied: phase-1 ids whose weights exist already (finished in an earlier run).
    order:     "priority" (the driver's), or for comparison in ``ssmix sweep plan``: "longest"
               (longest ready cell first) and "barrier" (the old stage schedule: no phase 2
               before every phase 1 has ended, file order)."""

    LOOK_AHEAD = 8      # ready cells asked about another driver's claim per pop (a request each on S3)

    def __init__(self, cells: list[Cell], costs: dict[str, float], satisfied: set[str] = frozenset(),
                 order: str = "priority"):
        self.pending = {c.id: c for c in cells}
        self.running: dict[str, Cell] = {}
        self.satisfied = set(satisfied)
        self.blocked: dict[str, str] = {}
        self.barrier = order == "barrier"
        self.started: set[str] = set()
        self.key = {"priority": lambda: priorities(cells, costs),
                    "longest": lambda: {c.id: (-costs[c.id], i) for i, c in enumerate(cells)},
                    "barrier": lambda: {c.id: (i,) for i, c in enumerate(cells)}}[order]()
        for cell in cells:    # a phase 2 whose phase 1 is neither done nor planned can never run
            if cell.kind == "phase2" and cell.phase1_id not in self.satisfied and cell.phase1_id not in self.pending:
                self._block(cell, "its phase-1 cell has no result")

    def _ready(self, cell: Cell) -> bool:
        if cell.kind == "phase1":
            return True
        if self.barrier and any(c.kind == "phase1" for c in (*self.pending.values(), *self.running.values())):
            return False
        return cell.phase1_id in self.satisfied

    def pop(self, elsewhere: Callable[[Cell], bool] | None = None) -> Cell | None:
        """The ready cell to run next (now running), or None if none is ready now. ``elsewhere``:
        whether another driver is training a cell now; the first of the next few ready cells that
        is not goes first (two drivers of one file then train side by side instead of one waiting
        on each claim the other holds); if all are, the best one (its trial waits for the claim)."""
        ready = [c for c in self.pending.values() if self._ready(c)]
        if not ready:
            return None
        if elsewhere is None:
            cell = min(ready, key=lambda c: self.key[c.id])
        else:
            best = heapq.nsmallest(self.LOOK_AHEAD, ready, key=lambda c: self.key[c.id])
            cell = next((c for c in best if not elsewhere(c)), best[0])
        self.running[cell.id] = self.pending.pop(cell.id)
        self.started.add(cell.id)
        return cell

    def add(self, cell: Cell, cost: float, done: bool) -> bool:
        """A cell made while the sweep runs (a search's proposal or confirmation). ``done``: it has
        a result already (a phase-1 cell with its weights). Returns whether it is new to the queue.
        It goes after the quick tasks, by its chain like the rest."""
        if cell.id in self.pending or cell.id in self.running or cell.id in self.blocked:
            return False
        if done:
            if cell.kind == "phase1":
                self.satisfied.add(cell.id)
            return False
        if cell.id in self.satisfied:
            return False
        self.pending[cell.id] = cell
        self.key[cell.id] = (1, 0.0, -cost, len(self.key))
        return True

    def complete(self, cell_id: str, ok: bool, reason: str = "") -> list[Cell]:
        """A running cell ended. Returns the cells this blocks (a failed phase 1's phase 2s)."""
        cell = self.running.pop(cell_id, None) or self.pending.pop(cell_id, None)
        if cell is None or cell.kind == "phase2":
            return []
        if ok:
            self.satisfied.add(cell_id)
            return []
        waiting = [c for c in self.pending.values() if c.phase1_id == cell_id]
        for other in waiting:
            self._block(other, f"its phase 1 ({cell.label}) failed: {reason}".rstrip(": "))
        return waiting

    def _block(self, cell: Cell, reason: str) -> None:
        self.pending.pop(cell.id, None)
        self.blocked[cell.id] = reason

    @property
    def finished(self) -> bool:
        return not self.pending and not self.running


# --------------------------------------------------------------------------- the simulation


@dataclass
class Schedule:
    workers: int
    start: dict[str, float] = field(default_factory=dict)
    end: dict[str, float] = field(default_factory=dict)

    @property
    def makespan(self) -> float:
        return max(self.end.values(), default=0.0)

    def columns(self, cells: list[Cell]) -> dict[str, float]:
        """task -> when its last cell ends (its column of the table is complete)."""
        done: dict[str, float] = {}
        for cell in cells:
            done[cell.task] = max(done.get(cell.task, 0.0), self.end[cell.id])
        return done


def simulate(cells: list[Cell], costs: dict[str, float], workers: int, order: str = "priority") -> Schedule:
    """List scheduling on ``workers`` equal workers with the driver's queue."""
    queue = CellQueue(cells, costs, order=order)
    schedule, now, free, events = Schedule(workers), 0.0, workers, []
    while not queue.finished:
        while free:
            cell = queue.pop()
            if cell is None:
                break
            schedule.start[cell.id] = now
            heapq.heappush(events, (now + costs[cell.id], cell.id))
            free -= 1
        if not events:
            break
        now, cell_id = heapq.heappop(events)
        schedule.end[cell_id] = now
        queue.complete(cell_id, ok=True)
        free += 1
    return schedule


def lower_bound(cells: list[Cell], costs: dict[str, float], workers: int) -> float:
    return max(sum(costs.values()) / workers, max(chain_lengths(cells, costs).values(), default=0.0))


ORDERS = {"priority": "ours", "longest": "longest first", "barrier": "stage barrier"}


def describe_schedules(cells: list[Cell], costs: dict[str, float], workers: int) -> str:
    """Our schedule beside longest-first and the old stage barrier, on ``workers`` workers."""
    runs = {order: simulate(cells, costs, workers, order) for order in ORDERS}
    bound = lower_bound(cells, costs, workers)
    unit = runs["priority"].makespan / 100
    columns = {order: run.columns(cells) for order, run in runs.items()}

    def row(label, values, fmt="{:13.1f}"):
        return f"| {label:<30} | " + " | ".join(fmt.format(v) for v in values) + " |"

    lines = [f"{len(cells)} cells on {workers} equal workers. Times in % of our makespan; the lower bound "
             f"max(work / workers, longest phase-1 -> phase-2 chain) is {bound / unit:.1f}.", "",
             f"| {'':<30} | " + " | ".join(f"{name:>13}" for name in ORDERS.values()) + " |",
             f"|{'-' * 32}|" + "|".join("-" * 15 for _ in ORDERS) + "|",
             row("makespan", [r.makespan / unit for r in runs.values()]),
             row("makespan / lower bound", [r.makespan / bound for r in runs.values()], "{:13.3f}"),
             row("first complete task column", [min(c.values()) / unit for c in columns.values()]),
             row("  as % of its own makespan", [100 * min(columns[o].values()) / runs[o].makespan for o in ORDERS])]
    for task, _ in sorted(columns["priority"].items(), key=lambda item: item[1]):
        lines.append(row(f"column {task} complete", [columns[o][task] / unit for o in ORDERS]))
    return "\n".join(lines)


def asha_group(cell: Cell) -> tuple[str, str] | None:
    """The early-stopping bracket a cell competes in, or None when it always runs to the end.
    One per task (accuracies of two tasks are not comparable), and in a search one per task and
    method (its proposals compete with each other). Phase 1 is shared by every method, and a
    search's confirmation of its best configuration on more seeds does not compete (seeds do not)."""
    if not cell.early_stoppable:
        return None
    return (cell.task, cell.method) if cell.is_proposal else (cell.task, "")
