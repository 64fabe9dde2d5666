"""What a sweep has produced so far: the results table, where the time went, the work left,
and what it holds on storage."""

from __future__ import annotations

import statistics

from ssmix.sweep.aggregate import task_order
from ssmix.sweep.cells import Cell, Figure, Origin, Row
from ssmix.sweep.plan import code_version, plan_cells, search_cell_pair, search_proposals
from ssmix.sweep.spec import SweepConfig
from ssmix.sweep.store import ResultStore

Table = dict[tuple[str, Row], list[Figure]]     # (task, row) -> the figure of each finished seed


def rows_for_summary(cells: list[Cell], store: ResultStore) -> Table:
    """The table of the finished cells: the phase-1 result is the "No mixup" row; a search's
    proposals are not rows (``sweep best`` shows them)."""
    table: Table = {}
    for cell in cells:
        result = store.finished(cell.id)
        if result is None or cell.is_proposal:
            continue
        table.setdefault((cell.task, cell.row), []).append(result.figure())
    return table


def format_summary(table: Table) -> str:
    if not table:
        return "no finished cells yet"
    lines = [f"| {'task':<12} | {'method':<28} | {'split':<10} | {'accuracy % (mean ± std)':>24} | {'n':>2} |",
             f"|{'-' * 14}|{'-' * 30}|{'-' * 12}|{'-' * 26}|{'-' * 4}|"]
    for (task, row), figures in sorted(table.items(), key=lambda item: task_order(item[0][0]) + item[0][1].sort_key()):
        values = [f.value for f in figures]
        split = ", ".join(sorted({f.split for f in figures}))
        mean = statistics.mean(values)
        cell = f"{mean:.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f} ± n/a"
        lines.append(f"| {task:<12} | {row.name:<28} | {split:<10} | {cell:>24} | {len(values):>2} |")
    return "\n".join(lines)


def plan_cost(sweep: SweepConfig, cells: list[Cell]) -> tuple[int, int]:
    """Trial-epochs of the whole plan, and of a naive sweep where every method's trial trains its
    own phase 1 (the "none" row being a phase-1-only trial)."""
    shared = sum(c.trial[c.kind]["epochs"] for c in cells)
    naive = sum(c.trial["phase1"]["epochs"] + c.trial["phase2"]["epochs"] for c in cells if c.kind == "phase2")
    if "none" in sweep.methods:
        naive += sum(c.trial["phase1"]["epochs"] for c in cells if c.kind == "phase1")
    return shared, naive


def timing_summary(cells: list[Cell], store: ResultStore, sweep_wall_seconds: float | None = None,
                   concurrency: float | None = None, launched: dict[str, float] | None = None,
                   mlflow_seconds: float | None = None, on_ray: bool = True) -> str | None:
    """Where the finished cells' time went: training steps, evaluation, and the rest of each
    trial (model and data loading, checkpoints, reports); then what each cell cost its trial slot
    outside the trial: from Tune's start of the trial to its first line (``launched``: cell id ->
    when Tune started its trial), MLflow on the driver, and the rest (Ray and its workers' start,
    Tune, waiting for a slot; in process: the driver's own work, its claims and storage).
    Cells resumed after a failure are left out: their steps span attempts, their wall time one."""
    results = {c.id: r for c in cells if (r := store.finished(c.id)) and r.timing is not None}
    timed = {cid: r.timing for cid, r in results.items() if not r.resumed}
    timings = list(timed.values())
    if not timings:
        return None
    wall = sum(t.trial_wall_seconds for t in timings)
    train = sum(t.train_seconds for t in timings)
    evaluation = sum(t.eval_seconds for t in timings)
    overhead = wall - train - evaluation
    line = (f"{len(timings)} trials: {wall:.1f} s inside trials = {train:.1f} s training steps "
            f"+ {evaluation:.1f} s evaluation + {overhead:.1f} s other ({overhead / len(timings):.1f} s per trial, "
            f"{100 * overhead / max(wall, 1e-9):.1f}%)")
    if len(timings) < len(results):
        line += f"; {len(results) - len(timings)} resumed cell(s) left out"
    if sweep_wall_seconds is not None and concurrency and len(timings) == len(results):
        driver = max(sweep_wall_seconds - wall / concurrency, 0.0)
        per_cell = driver * concurrency / len(timings)      # slot-seconds each cell cost outside its trial
        line += (f"\nsweep wall time {sweep_wall_seconds:.1f} s with {concurrency:g} trials at a time: "
                 f"about {driver:.1f} s outside trials, {per_cell:.2f} s per cell")
        parts = []
        starts = [t.started_at - launched[cid] for cid, t in timed.items() if launched and cid in launched]
        if starts:
            parts.append(f"Tune's trial start to the trial's first line {statistics.mean(starts):.2f}")
        if mlflow_seconds is not None:
            parts.append(f"MLflow on the driver {mlflow_seconds / len(timings):.2f}")
        if parts:
            rest = "Ray, its workers' start, Tune" if on_ray else "the driver's claims, storage and plan"
            line += " (" + ", ".join(parts) + f" s per cell; the rest: {rest})"
    return line


def estimate_work(cells: list[Cell], store: ResultStore) -> dict:
    """Trial-epochs left, by phase: what the plan still has to train."""
    left = {"phase1": 0, "phase2": 0}
    for cell in cells:
        if store.done(cell.id) is None:
            left[cell.kind] += cell.trial[cell.kind]["epochs"]
    return left


def human_bytes(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def describe_plan(sweep: SweepConfig) -> str:
    """``ssmix sweep status``: every cell, its state and its bytes on storage; the totals."""
    store = ResultStore.for_sweep(sweep).snapshot()
    cells = plan_cells(sweep, store=store)
    lines = [f"sweep {sweep.name}: {len(cells)} cells, storage {store.url}"]
    if sweep.search is not None:
        lines.append(describe_search_budget(sweep, store))
    cell_total = 0
    for cell in cells:
        result = store.result(cell.id)
        state = "pending" if result is None else result.status.value
        size = store.cell_bytes(cell.id)
        cell_total += size
        lines.append(f"  {cell.kind}  {cell.id}  {state:<8} {human_bytes(size):>9}  {cell.label}")
    total = store.total_bytes()
    lines.append(f"on storage: {human_bytes(total)} in all, {human_bytes(cell_total)} in this file's cells, "
                 f"{human_bytes(total - cell_total)} elsewhere (other cells, Tune's folders): "
                 f"`ssmix sweep gc FILE` removes what no cell of the file needs")
    left = estimate_work(cells, store)
    lines.append(f"work left: {left['phase1']} phase-1 trial-epochs, {left['phase2']} phase-2 trial-epochs")
    shared, naive = plan_cost(sweep, cells)
    lines.append(f"whole plan: {shared} trial-epochs with phase 1 shared; a naive sweep that trains phase 1 "
                 f"inside every trial: {naive} ({naive / max(shared, 1):.2f}x)")
    table = format_summary(rows_for_summary(cells, store))
    return "\n".join(lines) + "\n\n" + table


# ------------------------------------------------------------------------------------ search


def describe_search_budget(sweep: SweepConfig, store: ResultStore) -> str:
    search = sweep.search
    lines = [f"search: {search.algorithm} over {', '.join(search.space)}, seed {search.seed}, trials on seed "
             f"{search.trial_seed}, selection {search.selection}"
             + (f", confirmed on seeds {search.confirm_seeds}" if search.confirm_seeds else "")]
    for task, method, proposals in search_proposals(sweep, store):
        finished = sum(1 for p in proposals if _objective(store, _search_cell(sweep, task, method, p)) is not None)
        lines.append(f"  {task} / {method}: budget {search.budget(method)}, {len(proposals)} proposed, "
                     f"{finished} with a result")
    return "\n".join(lines)


def _search_cell(sweep: SweepConfig, task: str, method: str, params: dict) -> Cell:
    return search_cell_pair(sweep, task, method, params, code_version())[1]


def _objective(store: ResultStore, cell: Cell) -> float | None:
    result = store.done(cell.id)
    return None if result is None else result.objective()


def describe_best(sweep: SweepConfig, store: ResultStore) -> str:
    """``ssmix sweep best``: per task and method, the best configuration, its selection score, and
    the confirmation seeds' mean ± std."""
    if sweep.search is None:
        raise ValueError(f"sweep {sweep.name!r} has no `search` block")
    code = code_version()
    cells = plan_cells(sweep, code, store)
    lines = []
    for task, method, proposals in search_proposals(sweep, store):
        scored = [(_objective(store, _search_cell(sweep, task, method, p)), i, p)
                  for i, p in enumerate(proposals)]
        scored = [item for item in scored if item[0] is not None]
        budget = sweep.search.budget(method)
        lines.append(f"{task} / {method}: {len(scored)} of {budget} trials with a result")
        if not scored:
            continue
        value, index, params = max(scored, key=lambda item: item[0])
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        lines.append(f"  best: trial {index}: {shown}")
        lines.append(f"    selection accuracy {100 * value:.2f} (seed {sweep.search.trial_seed}, "
                     f"{'held-out dev split' if sweep.search.selection == 'dev-split' else 'selection splits'})")
        confirm = [c for c in cells if c.origin is Origin.CONFIRM and c.task == task and c.method == method]
        results = [store.finished(c.id) for c in confirm]
        results = [r for r in results if r is not None]
        if confirm:
            if len(results) < 2:
                lines.append(f"    confirmation: {len(results)} of {len(confirm)} seeds done")
            else:
                figures = [r.figure() for r in results]     # what every table shows for these cells
                reported = [f.value for f in figures]
                selection = [r.selection() for r in results]
                lines.append(f"    confirmation on {len(results)} seeds: {figures[0].split} accuracy "
                             f"{statistics.mean(reported):.2f} ± {statistics.stdev(reported):.2f}, selection "
                             f"{statistics.mean(selection):.2f} ± {statistics.stdev(selection):.2f} (mean ± std)")
        elif sweep.search.confirm_seeds:
            lines.append("    confirmation: waits until the search is complete")
    return "\n".join(lines)
