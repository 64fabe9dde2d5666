"""Seed statistics per (task, method, mix ratio), from the stored results: what the sweep's
summary runs in MLflow carry, so that the runs table sorted by ``acc_mean`` reads as Table 2.

A group's figure per seed is ``ssmix.sweep.results.figure`` (its split is the run's tag
``ssmix.split``). The baseline is the phase-1 result of the same seed ("No mixup"); the paired
difference, its 95% bootstrap interval and the paired t-test are ``ssmix.stats``'s.
"""

from __future__ import annotations

import statistics

from ssmix.methods import METHODS, PHASE2_CONTROL
from ssmix.stats import paired_comparison
from ssmix.sweep.plan import Cell
from ssmix.sweep.results import figure
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


def summary_rows(cells: list[Cell], store: ResultStore, baseline: str = "none") -> list[dict]:
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
        parts = ["none (phase 1)" if method == "none" else method, task]
        if ratio is not None:
            parts.append(f"λ{ratio:.3g}")
        if origin:
            parts.append(origin)
        tags = {"task": task, "method": method, "ssmix.baseline": baseline,
                "ssmix.split": ", ".join(sorted(splits[group]))}
        if ratio is not None:
            tags["mix_ratio"] = f"{ratio:g}"
        rows.append({"group": "|".join(str(p) for p in group), "name": " · ".join(parts + ["summary"]),
                     "tags": tags, "metrics": metrics,
                     "seeds": ", ".join(f"s{s}: {v:.2f}" for s, v in sorted(values.items()))})
    return rows
