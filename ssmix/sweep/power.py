"""Seeds planned before the GPU hours (``ssmix sweep power``): per task and comparison with the
baseline, how many seeds a paired t-test needs to find a difference of δ accuracy points, from
the spread of the paired differences a finished pilot sweep measured (this file's own results, or
another sweep file's, or a report's CSV), and what the seeds this file plans can detect.
"""

from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass
from pathlib import Path

from ssmix.config import default
from ssmix.methods import METHODS, PHASE2_CONTROL
from ssmix.stats import ALPHA, DETECTION_POWER, MIN_PAIRED_SEEDS, detectable_difference, seeds_needed
from ssmix.sweep.cells import Row, row_named
from ssmix.sweep.plan import plan_cells
from ssmix.sweep.spec import SweepConfig
from ssmix.sweep.store import ResultStore

# (task, row) -> seed -> the figure every table shows (accuracy %)
Figures = dict[tuple[str, Row], dict[int, float]]
# What reports written before the phase-2 control had its one name called it.
OLD_ROW_NAMES = {"none (phase-2 control)": PHASE2_CONTROL, "none-phase2": PHASE2_CONTROL}


@dataclass
class PowerRow:
    task: str
    row: Row
    pilot_seeds: int                 # paired seeds the pilot has for this comparison
    diff_std: float | None           # spread of the pilot's paired differences
    needed: int | None               # seeds for δ at the power asked (None: more than the planner tries)
    planned: int                     # seeds this file plans
    detects: float | None            # the smallest difference the planned seeds detect


def figures_from_store(sweep: SweepConfig) -> Figures:
    """A sweep's finished results, as the tables show them (a search's proposals left out)."""
    store = ResultStore.for_sweep(sweep)
    found: Figures = {}
    for cell in plan_cells(sweep, store=store):
        result = store.finished(cell.id)
        if result is None or cell.is_proposal:
            continue
        found.setdefault((cell.task, cell.row), {})[cell.seed] = result.figure().value
    return found


def figures_from_report_csv(path: Path) -> Figures:
    """The per-seed figures of an ``ssmix report`` CSV (its ``seeds`` column: ``seed:value;...``)."""
    found: Figures = {}
    with open(path, newline="") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            try:
                seeds = dict(item.split(":") for item in row["seeds"].split(";") if item)
                found[(row["column"], _csv_row(row["method"]))] = {int(s): float(v) for s, v in seeds.items()}
            except (KeyError, ValueError) as err:
                raise ValueError(f"{path}: line {line}: expected an `ssmix report` CSV with columns method, "
                                 f"column and seeds (seed:value;...), got {dict(row)} ({err})") from None
    return found


def _csv_row(name: str) -> Row:
    """The row a report's CSV names; reports written before rows named their λ0 show a method
    that reads one at the default mix ratio without it."""
    row = row_named(OLD_ROW_NAMES.get(name, name))
    if row.mix_ratio is None and row.method in METHODS and METHODS[row.method].uses_mix_ratio:
        return Row(row.method, default("mix_ratio"))
    return row


def planned_rows(sweep: SweepConfig, task: str, baseline: Row) -> list[Row]:
    """The rows of ``task`` that this file's table will have, besides the baseline: those of its
    planned cells, so exactly the rows its report shows."""
    rows = {c.row for c in plan_cells(sweep) if c.task == task and not c.is_proposal}
    return sorted((r for r in rows if r != baseline), key=Row.sort_key)


def power_rows(sweep: SweepConfig, pilot: Figures, delta: float, baseline: str = "none", alpha: float = ALPHA,
               power: float = DETECTION_POWER) -> list[PowerRow]:
    planned = len(sweep.seeds)
    base_row = row_named(baseline)
    rows = []
    for task in sweep.tasks:
        base = pilot.get((task, base_row), {})
        for row in planned_rows(sweep, task, base_row):
            mine = pilot.get((task, row), {})
            shared = sorted(set(mine) & set(base))
            diffs = [mine[s] - base[s] for s in shared]
            spread = statistics.stdev(diffs) if len(diffs) >= 2 else None
            rows.append(PowerRow(task, row, len(shared), spread,
                                 seeds_needed(spread, delta, alpha, power) if spread is not None else None, planned,
                                 detectable_difference(spread, planned, alpha, power)
                                 if spread is not None and spread > 0 and planned >= MIN_PAIRED_SEEDS else None))
    return rows


def format_power(rows: list[PowerRow], delta: float, pilot_name: str, baseline: str, alpha: float = ALPHA,
                 power: float = DETECTION_POWER) -> str:
    planned = rows[0].planned if rows else 0
    lines = [f"Seeds for a difference of δ = {delta:g} accuracy points with {power:.0%} power (two-sided paired "
             f"t-test at {alpha:g}, against `{baseline}` of the same seed), from the spread of the paired "
             f"differences in {pilot_name}:", "",
             f"| task | comparison | pilot seeds | sd of paired differences | seeds for δ = {delta:g} | "
             f"what {planned} seeds detect |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        spread = f"{r.diff_std:.2f}" if r.diff_std is not None else "–"
        needed = ("–" if r.diff_std is None else str(r.needed) if r.needed is not None else "> 10000")
        if r.detects is not None:
            detects = f"≥ {r.detects:.2f}"
        else:
            detects = f"no test below {MIN_PAIRED_SEEDS} seeds" if r.planned < MIN_PAIRED_SEEDS else "–"
        lines.append(f"| {r.task} | {r.row.name} vs {baseline} | {r.pilot_seeds} | {spread} | {needed} | {detects} |")
    if any(r.diff_std is None for r in rows):
        lines += ["", "–: the pilot has fewer than 2 paired seeds of that comparison, so no spread."]
    measured = [r.pilot_seeds for r in rows if r.diff_std is not None]
    if measured:
        fewest = min(measured)
        lines += ["", f"A spread measured on {fewest} pilot seeds is itself uncertain: the true sd may be up to "
                  f"{sd_upper_factor(fewest):.1f}x the measured one (95% upper limit), and the seeds needed grow "
                  "with its square."]
    return "\n".join(lines)


def sd_upper_factor(n: int, confidence: float = 0.95) -> float:
    """How many times the sample sd of n normal values the true sd may be, at its upper
    one-sided ``confidence`` limit (from the chi-square distribution of the sample variance)."""
    from scipy import stats

    return float(((n - 1) / stats.chi2.ppf(1 - confidence, n - 1)) ** 0.5)
