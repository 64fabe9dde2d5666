"""Seed statistics per (task, method, mix ratio), from the stored results: what the sweep's
summary runs in MLflow carry, so that the runs table sorted by ``acc_mean`` reads as Table 2.

A group's figure per seed is the paper's (best over both phases; the task's reported split at
the selected checkpoint). The baseline is the phase-1 result of the same seed ("No mixup"); the
paired difference, its 95% bootstrap interval and the paired t-test are ``ssmix.report``'s.
"""

from __future__ import annotations

import statistics

from ssmix.sweep.plan import Cell
from ssmix.sweep.store import ResultStore


def reported_split(result: dict) -> str:
    """The split a single-column task reports: its evaluation split, not the held-out dev split
    a `selection: dev-split` sweep selects on."""
    splits = [s for s in result["best_accuracy"] if s != "dev"] or list(result["best_accuracy"])
    return splits[0]


def seed_figure(result: dict) -> float:
    """The paper's figure in percent: one split's accuracy, or for a task selected on several
    splits (ANLI) the selection accuracy (the mean of its dev rounds)."""
    if len([s for s in result["best_accuracy"] if s != "dev"]) > 1:
        return 100.0 * result["best_selection"]
    return 100.0 * result["best_accuracy"][reported_split(result)]


def group_of(cell: Cell) -> tuple[str, str, float | None, str] | None:
    """(task, method, mix ratio, origin) of a result the summaries count; a search's proposals
    are configurations of their own and are not averaged."""
    if cell.origin and cell.origin.startswith("search"):
        return None
    if cell.kind == "phase1":
        return (cell.task, "none", None, cell.origin or "")
    from ssmix.tracking import uses_mix_ratio

    ratio = cell.mix_ratio if uses_mix_ratio(cell.to_dict()) else None
    method = cell.method if cell.method != "none" else "none-phase2"
    return (cell.task, method, ratio, cell.origin or "")


def summary_rows(cells: list[Cell], store: ResultStore, baseline: str = "none") -> list[dict]:
    from ssmix.report import paired_comparison
    from ssmix.sweep.summary import table2_order

    seeds: dict[tuple, dict[int, float]] = {}
    for cell in cells:
        group = group_of(cell)
        result = store.finished(cell.id)
        if group is None or result is None:
            continue
        seeds.setdefault(group, {})[cell.seed] = seed_figure(result)
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
        parts = [{"none": "none (phase 1)", "none-phase2": "none (phase-2 control)"}.get(method, method), task]
        if ratio is not None:
            parts.append(f"λ{ratio:.3g}")
        if origin:
            parts.append(origin)
        tags = {"task": task, "method": method, "ssmix.baseline": baseline}
        if ratio is not None:
            tags["mix_ratio"] = f"{ratio:g}"
        rows.append({"group": "|".join(str(p) for p in group), "name": " · ".join(parts + ["summary"]),
                     "tags": tags, "metrics": metrics,
                     "seeds": ", ".join(f"s{s}: {v:.2f}" for s, v in sorted(values.items()))})
    return rows
