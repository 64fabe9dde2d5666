"""The report's pictures: each seed's accuracy per method, and the accuracy curves."""

from __future__ import annotations

import statistics
from pathlib import Path

from ssmix.report.render import column_label
from ssmix.report.table import METHOD_LABELS, METHOD_ORDER, TASK_LABELS, Record, Report, row_label


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
            points = [(i, report.values[(r, column)][seed]) for i, r in enumerate(rows) if seed in report.values[(r, column)]]
            ax.plot([p[0] for p in points], [p[1] for p in points], color="#bbbbbb", linewidth=0.8, zorder=1)
            ax.scatter([p[0] for p in points], [p[1] for p in points], color="#777777", s=12, zorder=2)
        for i, r in enumerate(rows):
            mean, std, _ = report.cell(r, column)
            color = "black" if r == report.baseline else f"C{i}"
            ax.errorbar([i + 0.18], [mean], yerr=[std or 0.0], fmt="D", color=color, capsize=4, markersize=6, zorder=3)
        ax.set_xticks(range(len(rows)), [METHOD_LABELS.get(r, r) for r in rows], rotation=30, ha="right")
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
        labels = sorted({row_label(r) for r in mine}, key=lambda l: METHOD_ORDER.index(l) if l in METHOD_ORDER else 99)
        for i, label in enumerate(labels):
            curves = [dict(phase1.get(r.seed, []) + r.curve if r.kind == "phase2" else r.curve)
                      for r in mine if row_label(r) == label]
            steps = sorted(set().union(*curves))
            per_step = [[c[s] for c in curves if s in c] for s in steps]
            mean = [statistics.mean(v) for v in per_step]
            baseline = label == "none"
            ax.plot(steps, mean, label=METHOD_LABELS.get(label, label), color="black" if baseline else f"C{i}",
                    linestyle="--" if baseline else "-", linewidth=2.2 if baseline else 1.5, zorder=4 if baseline else 3)
            ax.fill_between(steps, [min(v) for v in per_step], [max(v) for v in per_step], alpha=0.2,
                            color="#555555" if baseline else f"C{i}")
        if phase1 and any(r.kind == "phase2" for r in mine):
            boundary = statistics.mean(max(step for step, _ in curve) for curve in phase1.values())
            ax.axvline(boundary, color="#555555", linestyle=":", linewidth=1)
            ax.text(boundary, ax.get_ylim()[0], " phase 2 →", fontsize=8, va="bottom", color="#555555")
        split = next((r.curve_name for r in mine if r.curve_name), "accuracy")
        ax.set_title(f"{TASK_LABELS.get(task, task)}: mean over seeds, band min–max")
        ax.set_xlabel("global step")
        ax.set_ylabel(f"{split.replace('selection_acc', 'mean dev-round').replace('acc_', '')} accuracy %")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
