"""Seed statistics per (task, row), kept current as cells finish: what the sweep's summary runs in
MLflow carry, so that the runs table sorted by ``acc_mean`` reads as Table 2; per row, aggregates
over the sweep's tasks (the aggregate runs); and, where a method was tried in several
configurations (a search, a list of mix ratios), the expected best score against the number of
trials (budget metrics with step k on its summary runs).

A group's figure per seed is ``CellResult.figure`` (its split is the run's tag ``ssmix.split``).
The baseline is the phase-1 result of the same seed ("No mixup"); the paired difference, its 95%
bootstrap interval and the paired t-test are ``ssmix.stats``'s, and so are the aggregates over
tasks and the budget curve. ``Summaries`` is told of each finished cell and recomputes only the
rows that cell changed (a new baseline seed changes every row of its task).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Literal

from ssmix.stats import across_tasks, budget_curve, paired_comparison, probability_of_improvement
from ssmix.sweep.cells import BASELINE_ROW, Cell, CellResult, Origin, Row
from ssmix.tasks import TASKS

Series = dict[str, list[tuple[int, float]]]      # metric name -> [(step k, value)]


@dataclass(frozen=True)
class Group:
    """The cells one summary run averages over seeds: a task's row, from the grid or from a
    search's confirmation (a search's proposals are configurations of their own, never averaged)."""
    task: str
    row: Row
    origin: str = ""          # "" (the grid) or "confirm"

    def sort_key(self) -> tuple:
        return task_order(self.task) + self.row.sort_key() + (self.origin,)


def task_order(task: str) -> tuple:
    """Tasks as the task table lists them (then by name)."""
    tasks = list(TASKS)
    return (tasks.index(task) if task in tasks else len(tasks), task)


def group_of(cell: Cell) -> Group | None:
    return None if cell.is_proposal else Group(cell.task, cell.row, cell.origin_label or "")


@dataclass
class SummaryRow:
    """One summary or aggregate run: created once, its metrics logged again when they change."""
    kind: Literal["summary", "aggregate"]
    key: str                     # the run's ``ssmix.group`` tag: found again by every invocation
    name: str
    tags: dict[str, str]
    metrics: dict[str, float | None]
    seeds: str                   # each seed's figure, or each task's count of scores
    series: Series = field(default_factory=dict)


class Summaries:
    """The summary and aggregate rows of a sweep's cells. ``add`` a finished cell's result;
    ``rows`` gives the rows changed since the last ``pushed`` (or all of them)."""

    def __init__(self, cells: list[Cell], baseline: str = BASELINE_ROW):
        self.baseline = Row(baseline)
        self.seeds: dict[Group, dict[int, float]] = {}
        self.splits: dict[Group, set[str]] = {}
        self.trials: dict[tuple[str, str], dict[str, tuple[float, float] | None]] = {}   # see budget
        self.configurations: dict[tuple[str, str], set] = {}
        self._changed: set[Group] = set()
        self._changed_budgets: set[tuple[str, str]] = set()
        self.plan(cells)

    @classmethod
    def from_store(cls, cells: list[Cell], store, baseline: str = BASELINE_ROW) -> "Summaries":
        summaries = cls(cells, baseline)
        for cell in cells:
            result = store.done(cell.id)
            if result is not None:
                summaries.add(cell, result)
        return summaries

    def plan(self, cells: list[Cell]) -> None:
        """The cells of the plan as it stands (a search adds proposals and confirmations)."""
        for cell in cells:
            key = budget_key(cell)
            if key is not None and cell.id not in self.trials.setdefault(key, {}):
                self.trials[key][cell.id] = None
                self.configurations.setdefault(key, set()).add((cell.mix_ratio, cell.search_index))
                self._changed_budgets.add(key)

    def add(self, cell: Cell, result: CellResult) -> None:
        """A cell's result (finished, or stopped by the scheduler: a trial of a budget, no seed)."""
        self.plan([cell])
        key = budget_key(cell)
        if key is not None:
            self.trials[key][cell.id] = (
                (100.0 * result.objective(), result.figure().value) if result.is_finished else (None, None))
            self._changed_budgets.add(key)
        group = group_of(cell)
        if group is None or not result.is_finished:
            return
        shown = result.figure()
        self.seeds.setdefault(group, {})[cell.seed] = shown.value
        self.splits.setdefault(group, set()).add(shown.split)
        self._changed.add(group)

    def rows(self, changed_only: bool = False) -> list[SummaryRow]:
        """Summary rows (one per group, with the budget curve of its task and method where there
        is one), then aggregate rows (one per row of the table and origin, over its tasks)."""
        budgets = self._budget_series()
        if changed_only:
            groups = set(self._changed)
            groups |= {g for g in self.seeds if (g.task, g.row.method) in self._changed_budgets}
            for changed in self._changed:      # a baseline seed changes every comparison of its task
                if changed.row == self.baseline:
                    groups |= {g for g in self.seeds if (g.task, g.origin) == (changed.task, changed.origin)}
        else:
            groups = set(self.seeds)
        aggregates = {(g.row, g.origin) for g in groups}
        if any(g.row == self.baseline for g in groups):
            aggregates |= {(g.row, g.origin) for g in self.seeds if g.origin in {b.origin for b in groups}}
        summary = [self._summary_row(g, budgets.get((g.task, g.row.method))) for g in sorted(groups, key=Group.sort_key)]
        return summary + [self._aggregate_row(row, origin) for row, origin in
                          sorted(aggregates, key=lambda a: a[0].sort_key() + (a[1],))]

    def pushed(self) -> None:
        """The tracker has every row as it stands: no row counts as changed until the next ``add``."""
        self._changed.clear()
        self._changed_budgets.clear()

    def _summary_row(self, group: Group, budget: tuple[int, Series] | None) -> SummaryRow:
        values = self.seeds[group]
        base = self.seeds.get(Group(group.task, self.baseline, group.origin))
        metrics: dict[str, float | None] = {
            "acc_mean": statistics.mean(values.values()), "n_seeds": len(values),
            "acc_std": statistics.stdev(values.values()) if len(values) > 1 else None}
        if base is not None and group.row != self.baseline:
            comparison = paired_comparison(values, base)
            metrics.update(diff_vs_baseline=comparison.mean_diff, diff_ci_low=comparison.ci_low,
                           diff_ci_high=comparison.ci_high, p_value=comparison.p_value, n_paired=comparison.n,
                           diff_detectable=comparison.detectable)
        tags = {"task": group.task, "method": group.row.method, "ssmix.baseline": self.baseline.name,
                "ssmix.split": ", ".join(sorted(self.splits[group]))}
        if group.row.mix_ratio is not None:
            tags["mix_ratio"] = f"{group.row.mix_ratio:g}"
        row = SummaryRow("summary", "|".join((group.task, group.row.method, str(group.row.mix_ratio), group.origin)),
                         " · ".join([group.row.name, group.task] + ([group.origin] if group.origin else []) + ["summary"]),
                         tags, metrics, ", ".join(f"s{s}: {v:.2f}" for s, v in sorted(values.items())))
        if budget is not None:
            row.metrics["budget_trials"], row.series = budget
        return row

    def _aggregate_row(self, row: Row, origin: str) -> SummaryRow:
        """The mean and IQM over every task and seed with stratified bootstrap intervals, and
        P(row > baseline), over the tasks it has (``ssmix.stats``)."""
        scores = {g.task: list(v.values()) for g, v in self.seeds.items() if (g.row, g.origin) == (row, origin)}
        mean, iqm = across_tasks(scores, "mean"), across_tasks(scores, "iqm")
        metrics: dict[str, float | None] = {
            "n_tasks": len(scores), "n_scores": sum(len(v) for v in scores.values()),
            "mean_over_tasks": mean.value, "mean_ci_low": mean.low, "mean_ci_high": mean.high,
            "iqm_over_tasks": iqm.value, "iqm_ci_low": iqm.low, "iqm_ci_high": iqm.high}
        base = {g.task: list(v.values()) for g, v in self.seeds.items() if (g.row, g.origin) == (self.baseline, origin)}
        if base and row != self.baseline and set(scores) & set(base):
            improvement = probability_of_improvement(scores, base)
            metrics.update(p_improvement=improvement.value, p_improvement_ci_low=improvement.low,
                           p_improvement_ci_high=improvement.high)
        tags = {"method": row.method, "ssmix.baseline": self.baseline.name, "ssmix.tasks": ", ".join(sorted(scores))}
        if row.mix_ratio is not None:
            tags["mix_ratio"] = f"{row.mix_ratio:g}"
        return SummaryRow("aggregate", "|".join(("aggregate", row.method, str(row.mix_ratio), origin)),
                          " · ".join([row.name] + ([origin] if origin else []) + [f"{len(scores)} tasks", "aggregate"]),
                          tags, metrics, "; ".join(f"{t}: {len(v)}" for t, v in sorted(scores.items())))

    def _budget_series(self) -> dict[tuple[str, str], tuple[int, Series]]:
        """(task, method) -> (trials, series) for every method tried in several configurations
        whose trials all have a result: the expected best selection score after k trials with its
        ± one standard deviation band, and the expected reported accuracy of the trial so selected
        (Dodge et al. 2019), each as [(k, value)], in percent."""
        series = {}
        for key, trials in self.trials.items():
            found = [t for t in trials.values() if t is not None and t[0] is not None]
            if len(self.configurations[key]) < 2 or any(t is None for t in trials.values()) or len(found) < 2:
                continue
            curve = budget_curve([s for s, _ in found], [r for _, r in found])
            series[key] = (len(found), {
                "budget_best_selection": [(p.k, p.expected_best) for p in curve],
                "budget_best_selection_low": [(p.k, p.expected_best - p.std) for p in curve],
                "budget_best_selection_high": [(p.k, p.expected_best + p.std) for p in curve],
                "budget_reported_acc": [(p.k, p.expected_reported) for p in curve]})
        return series


def budget_key(cell: Cell) -> tuple[str, str] | None:
    """The (task, method) whose budget curve counts this cell as a trial: a phase-2 cell of a
    method (not the control), not a confirmation seed."""
    if cell.kind != "phase2" or cell.origin is Origin.CONFIRM or cell.method == "none":
        return None
    return (cell.task, cell.method)
