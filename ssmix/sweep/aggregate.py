"""Seed statistics per (task, method, mix ratio), from the stored results: what the sweep's
summary runs in MLflow carry, so that the runs table sorted by ``acc_mean`` reads as Table 2;
per method, aggregates over the sweep's tasks (the aggregate runs); and, where a method was tried
in several configurations (a search, a list of mix ratios), the expected best score against the
number of trials (budget metrics with step k on its summary runs).

A group's figure per seed is ``ssmix.sweep.results.figure`` (its split is the run's tag
``ssmix.split``). The baseline is the phase-1 result of the same seed ("No mixup"); the paired
difference, its 95% bootstrap interval and the paired t-test are ``ssmix.stats``'s, and so are
the aggregates over tasks and the budget curve.
"""

from __future__ import annotations

import statistics

from ssmix.methods import METHODS, PHASE2_CONTROL
from ssmix.stats import across_tasks, budget_curve, paired_comparison, probability_of_improvement
from ssmix.sweep.plan import Cell, Origin
from ssmix.sweep.results import figure, objective
from ssmix.sweep.store import ResultStore
from ssmix.sweep.summary import table2_order


def group_of(cell: Cell) -> tuple[str, str, float | None, str] | None:
    """(task, row name, mix ratio, origin) of a result the summaries count; a search's proposals
    are configurations of their own and are not averaged."""
    if cell.is_proposal:
        return None
    ratio = cell.mix_ratio if cell.kind == "phase2" and METHODS[cell.method].uses_mix_ratio else None
    method = "none" if cell.kind == "phase1" else PHASE2_CONTROL if cell.method == "none" else cell.method
    return (cell.task, method, ratio, cell.origin_label or "")


def _name_parts(method: str, ratio: float | None, origin: str, task: str | None = None) -> list[str]:
    """The start of a summary or aggregate run's name: row, task, mix ratio, origin."""
    parts = ["none (phase 1)" if method == "none" else method] + ([task] if task else [])
    return parts + ([f"λ{ratio:.3g}"] if ratio is not None else []) + ([origin] if origin else [])


def summary_rows(cells: list[Cell], store: ResultStore, baseline: str = "none") -> list[dict]:
    """The summary rows (kind "summary", one per group, with the budget curve of its task and
    method where there is one) and the aggregate rows (kind "aggregate", one per method)."""
    seeds: dict[tuple, dict[int, float]] = {}
    splits: dict[tuple, set[str]] = {}
    for cell in cells:
        group = group_of(cell)
        result = store.finished(cell.id)
        if group is None or result is None:
            continue
        shown = figure(result)
        seeds.setdefault(group, {})[cell.seed] = shown.value
        splits.setdefault(group, set()).add(shown.split)
    budgets = budget_series(cells, store)
    rows = []
    for group in sorted(seeds, key=lambda g: table2_order(g[0], g[1])):
        task, method, ratio, origin = group
        values = seeds[group]
        base = seeds.get((task, baseline, None, origin))
        metrics = {"acc_mean": statistics.mean(values.values()), "n_seeds": len(values),
                   "acc_std": statistics.stdev(values.values()) if len(values) > 1 else None}
        if base is not None and method != baseline:
            comparison = paired_comparison(values, base)
            metrics.update(diff_vs_baseline=comparison.mean_diff, diff_ci_low=comparison.ci_low,
                           diff_ci_high=comparison.ci_high, p_value=comparison.p_value, n_paired=comparison.n,
                           diff_detectable=comparison.detectable)
        tags = {"task": task, "method": method, "ssmix.baseline": baseline,
                "ssmix.split": ", ".join(sorted(splits[group]))}
        if ratio is not None:
            tags["mix_ratio"] = f"{ratio:g}"
        row = {"kind": "summary", "group": "|".join(str(p) for p in group),
               "name": " · ".join(_name_parts(method, ratio, origin, task) + ["summary"]), "tags": tags, "metrics": metrics,
               "seeds": ", ".join(f"s{s}: {v:.2f}" for s, v in sorted(values.items()))}
        if (task, method) in budgets:
            trials, series = budgets[(task, method)]
            row["metrics"]["budget_trials"] = trials
            row["series"] = series
        rows.append(row)
    return rows + aggregate_rows(seeds, baseline)


def aggregate_rows(seeds: dict[tuple, dict[int, float]], baseline: str) -> list[dict]:
    """Per method (grid rows only), the mean and IQM over every task and seed with stratified
    bootstrap intervals, and P(method > baseline), over the tasks it has (``ssmix.stats``)."""
    by_row: dict[tuple, dict[str, list[float]]] = {}
    for (task, method, ratio, origin), values in seeds.items():
        by_row.setdefault((method, ratio, origin), {})[task] = list(values.values())
    rows = []
    for (method, ratio, origin), scores in sorted(by_row.items(), key=lambda item: table2_order("", item[0][0])):
        mean, iqm = across_tasks(scores, "mean"), across_tasks(scores, "iqm")
        metrics = {"n_tasks": len(scores), "n_scores": sum(len(v) for v in scores.values()),
                   "mean_over_tasks": mean.value, "mean_ci_low": mean.low, "mean_ci_high": mean.high,
                   "iqm_over_tasks": iqm.value, "iqm_ci_low": iqm.low, "iqm_ci_high": iqm.high}
        base = by_row.get((baseline, None, origin))
        if base is not None and method != baseline and set(scores) & set(base):
            improvement = probability_of_improvement(scores, base)
            metrics.update(p_improvement=improvement.value, p_improvement_ci_low=improvement.low,
                           p_improvement_ci_high=improvement.high)
        tags = {"method": method, "ssmix.baseline": baseline, "ssmix.tasks": ", ".join(sorted(scores))}
        rows.append({"kind": "aggregate", "group": "aggregate|" + "|".join(str(p) for p in (method, ratio, origin)),
                     "name": " · ".join(_name_parts(method, ratio, origin) + [f"{len(scores)} tasks", "aggregate"]),
                     "tags": tags, "metrics": metrics, "seeds": "; ".join(f"{t}: {len(v)}" for t, v in sorted(scores.items()))})
    return rows


def budget_series(cells: list[Cell], store: ResultStore) -> dict[tuple[str, str], tuple[int, dict]]:
    """(task, method) -> (trials, metric series) for every method tried in several configurations
    whose trials all have a result: the expected best selection score after k trials with its
    ± one standard deviation band, and the expected reported accuracy of the trial so selected
    (Dodge et al. 2019), each as [(k, value)], in percent. Confirmation seeds are not trials."""
    trials: dict[tuple[str, str], list[tuple[float, float]]] = {}
    configurations: dict[tuple[str, str], set] = {}
    complete: dict[tuple[str, str], bool] = {}
    for cell in cells:
        if cell.kind != "phase2" or cell.origin is Origin.CONFIRM or cell.method == "none":
            continue
        key = (cell.task, cell.method)
        configurations.setdefault(key, set()).add((cell.mix_ratio, cell.search_index))
        result = store.result(cell.id)
        complete[key] = complete.get(key, True) and result is not None
        finished = store.finished(cell.id)
        if finished is not None:
            trials.setdefault(key, []).append((100.0 * objective(finished), figure(finished).value))
    series = {}
    for key, found in trials.items():
        if len(configurations[key]) < 2 or not complete[key] or len(found) < 2:
            continue
        curve = budget_curve([s for s, _ in found], [r for _, r in found])
        series[key] = (len(found), {
            "budget_best_selection": [(p.k, p.expected_best) for p in curve],
            "budget_best_selection_low": [(p.k, p.expected_best - p.std) for p in curve],
            "budget_best_selection_high": [(p.k, p.expected_best + p.std) for p in curve],
            "budget_reported_acc": [(p.k, p.expected_reported) for p in curve]})
    return series
