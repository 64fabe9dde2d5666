"""The report's pictures: each seed's accuracy per method, and the accuracy curves."""

from __future__ import annotations

import statistics
from pathlib import Path

from ssmix.report.render import column_label
from ssmix.report.table import TASK_LABELS, Record, Report, row_label
from ssmix.sweep.cells import row_named


def plot_accuracy(report: Report, path: Path) -> None:
    """Per column: each seed's accuracy per method, joined across methods (the comparison is
    paired by seed), and the mean ± std. Points, not bars: the axis is zoomed to the data, which
    bars from a cut axis would exaggerate; the y range is printed on the axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = report.columns
    fig, axes = plt.subplots(1, len(columns), figsize=(max(4.8, 3.8 * len(columns)), 4.4), squeeze=False)
    for ax, column in zip(axes[0], columns):
        rows = [r for r in report.rows if report.cell(r, column)]
        seeds = sorted({s for r in rows for s in report.values[(r, column)]})
        for seed in seeds:       # one thin line per seed across the methods that have it
            points = [(i, report.values[(r, column)][seed]) for i, r in enumerate(rows)
                      if seed in report.values[(r, column)]]
            ax.plot([p[0] for p in points], [p[1] for p in points], color="#bbbbbb", linewidth=0.8, zorder=1)
            ax.scatter([p[0] for p in points], [p[1] for p in points], color="#777777", s=12, zorder=2)
        for i, r in enumerate(rows):
            mean, std, _ = report.cell(r, column)
            color = "black" if r == report.baseline else f"C{i}"
            ax.errorbar([i + 0.18], [mean], yerr=[std or 0.0], fmt="D", color=color, capsize=4, markersize=6, zorder=3)
        ax.set_xticks(range(len(rows)), [row_label(r) for r in rows], rotation=30, ha="right")
        ax.set_xlim(-0.5, len(rows) - 0.3)
        ax.set_title(column_label(column))
        ax.set_ylabel("accuracy %")
        low, high = ax.get_ylim()
        ax.set_xlabel(f"grey: one seed, joined across methods; ◆ mean ± std\n(axis {low:.1f}–{high:.1f}, not from 0)",
                      fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(records: list[Record], path: Path) -> None:
    """Accuracy on the split a run selects its checkpoint on, over global steps: mean over seeds
    and a min-max band. Each phase-2 method's curve continues its seed's phase-1 curve, and a
    dotted line marks where phase 2 begins."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r.task for r in records if r.curve})
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(max(5.5, 5.5 * len(tasks)), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        mine = [r for r in records if r.task == task and r.curve]
        phase1 = {r.seed: r.curve for r in mine if r.kind == "phase1"}
        rows = sorted({r.row for r in mine}, key=lambda row: row.sort_key())
        for i, row in enumerate(rows):
            curves = [dict(phase1.get(r.seed, []) + r.curve if r.kind == "phase2" else r.curve)
                      for r in mine if r.row == row]
            steps = sorted(set().union(*curves))
            per_step = [[c[s] for c in curves if s in c] for s in steps]
            mean = [statistics.mean(v) for v in per_step]
            baseline = row.is_baseline
            ax.plot(steps, mean, label=row_label(row.name), color="black" if baseline else f"C{i}",
                    linestyle="--" if baseline else "-", linewidth=2.2 if baseline else 1.5, zorder=4 if baseline else 3)
            ax.fill_between(steps, [min(v) for v in per_step], [max(v) for v in per_step], alpha=0.2,
                            color="#555555" if baseline else f"C{i}")
        if phase1 and any(r.kind == "phase2" for r in mine):
            boundary = statistics.mean(max(step for step, _ in curve) for curve in phase1.values())
            ax.axvline(boundary, color="#555555", linestyle=":", linewidth=1)
            ax.text(boundary, ax.get_ylim()[0], " phase 2 →", fontsize=8, va="bottom", color="#555555")
        split = next((r.curve_name for r in mine if r.curve_name), "accuracy")
        ax.set_title(f"{TASK_LABELS.get(task, task)}: mean over {len(phase1) or 'the'} seeds, band min–max")
        ax.set_xlabel("global step")
        ax.set_ylabel(f"{split.replace('selection_acc', 'mean dev-round').replace('acc_', '')} accuracy %")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_across(across, path: Path) -> None:
    """rliable's interval plot: per method, the mean, the IQM and P(method > baseline) with their
    95% stratified bootstrap intervals (a point alone where a task had one seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = across.rows
    panels = [("mean", "mean accuracy %"), ("iqm", "IQM accuracy %"),
              ("improvement", f"P(method > {row_label(across.baseline)})")]
    fig, axes = plt.subplots(1, 3, figsize=(12, 0.55 * len(rows) + 1.6), squeeze=False)
    for ax, (field, title) in zip(axes[0], panels):
        for i, row in enumerate(rows):
            interval = getattr(row, field)
            if interval is None:
                continue
            color = "black" if row.row == across.baseline else f"C{i}"
            if interval.low is not None:
                ax.plot([interval.low, interval.high], [i, i], color=color, linewidth=6, alpha=0.35,
                        solid_capstyle="butt")
            ax.plot([interval.value], [i], "|", color=color, markersize=16, markeredgewidth=2.5)
        if field == "improvement":
            ax.axvline(0.5, color="#888888", linestyle=":", linewidth=1)
        ax.set_yticks(range(len(rows)), [row_label(r.row) for r in rows] if field == "mean" else [])
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.invert_yaxis()
        ax.set_title(title)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"Across {across.task_count} task(s): bar = 95% stratified bootstrap interval, tick = estimate",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_budget(curves: dict[str, dict[str, dict[str, list[tuple[int, float]]]]], path: Path) -> None:
    """Per task, per method tried in several configurations: the expected best selection score
    after k trials (solid, band ± one standard deviation) and the expected reported accuracy of
    the trial it selects (dashed), Dodge et al. 2019."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted(curves)
    fig, axes = plt.subplots(1, len(tasks), figsize=(max(5.5, 5.5 * len(tasks)), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for i, (method, series) in enumerate(sorted(curves[task].items(),
                                                    key=lambda item: row_named(item[0]).sort_key())):
            label = row_label(method)
            ks = [k for k, _ in series["budget_best_selection"]]
            ax.plot(ks, [v for _, v in series["budget_best_selection"]], color=f"C{i}", marker="o", markersize=3,
                    label=f"{label}: best selection score")
            ax.fill_between(ks, [v for _, v in series["budget_best_selection_low"]],
                            [v for _, v in series["budget_best_selection_high"]], color=f"C{i}", alpha=0.15)
            ax.plot(ks, [v for _, v in series["budget_reported_acc"]], color=f"C{i}", linestyle="--",
                    label=f"{label}: reported accuracy of that trial")
        ax.set_title(f"{TASK_LABELS.get(task, task)}: expected score after k trials")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("trials k (drawn from the finished ones); band: ± one standard deviation")
        ax.set_ylabel("accuracy %")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
