"""The comparison report: the paper's Table 2 from a sweep's MLflow runs, with seed statistics.

Pure functions over *records* (one per finished cell run: task, method, seed, metrics); the
MLflow reading is in ``ssmix.tracking``. Cells are ``mean ± std (n)`` over seeds; differences
to a baseline method are paired by seed, with a 95% bootstrap interval and a paired t-test
p-value, Holm-corrected across the table (``ssmix.stats``). Fewer than 3 paired seeds: "n/a",
never a number.
"""

from __future__ import annotations

import csv
import html
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ssmix.methods import METHODS, PHASE2_CONTROL
from ssmix.stats import DETECTION_POWER, MIN_PAIRED_SEEDS, Comparison, holm, paired_comparison
from ssmix.sweep.results import reported_split, row_name
from ssmix.tasks import TASKS

METHOD_ORDER = list(METHODS)   # the paper's order
METHOD_LABELS = {"none": "No mixup", "embedmix": "EmbedMix", "tmix": "TMix", "ssmix": "SSMix",
                 "ssmix-nosal": "SSMix − saliency", "ssmix-nosal-nospan": "SSMix − saliency − span",
                 "unk": "Random UNK", PHASE2_CONTROL: "No mixup, phase 2 (control)"}
TASK_LABELS = {"sst2": "SST-2", "qqp": "QQP", "mnli": "MNLI", "qnli": "QNLI", "rte": "RTE", "mrpc": "MRPC",
               "trec-coarse": "TREC-c", "trec-fine": "TREC-f (50)", "trec-fine-47": "TREC-f (47)"}

# docs/method.md §4: the paper's Table 2 (and Table B.1 for UNK), accuracy %, by task and method. The
# paper's TREC-f is 47 classes (docs/method.md §3): its figures sit beside trec-fine-47 only, never
# beside our 50-class trec-fine; ANLI's are per round and split (anli dev_r1 ...).
PAPER: dict[str, dict[str, float]] = {
    "sst2": {"none": 92.96, "embedmix": 93.03, "tmix": 93.03, "ssmix": 93.10,
             "ssmix-nosal": 93.12, "ssmix-nosal-nospan": 93.14, "unk": 93.10},
    "qqp": {"none": 91.32, "embedmix": 91.36, "tmix": 91.34, "ssmix": 91.43,
            "ssmix-nosal": 91.32, "ssmix-nosal-nospan": 91.32, "unk": 91.33},
    "mnli": {"none": 84.27, "embedmix": 84.35, "tmix": 84.33, "ssmix": 84.54,
             "ssmix-nosal": 84.48, "ssmix-nosal-nospan": 84.54, "unk": 84.46},
    "qnli": {"none": 91.28, "embedmix": 91.43, "tmix": 91.40, "ssmix": 91.54,
             "ssmix-nosal": 91.29, "ssmix-nosal-nospan": 91.45, "unk": 91.45},
    "rte": {"none": 65.56, "embedmix": 67.73, "tmix": 66.86, "ssmix": 67.22,
            "ssmix-nosal": 67.00, "ssmix-nosal-nospan": 66.93, "unk": 66.86},
    "mrpc": {"none": 86.37, "embedmix": 86.72, "tmix": 86.42, "ssmix": 86.57,
             "ssmix-nosal": 86.42, "ssmix-nosal-nospan": 86.37, "unk": 86.62},
    "trec-coarse": {"none": 97.08, "embedmix": 97.44, "tmix": 97.52, "ssmix": 97.60,
                    "ssmix-nosal": 97.44, "ssmix-nosal-nospan": 97.40, "unk": 97.44},
    "trec-fine-47": {"none": 86.68, "embedmix": 90.04, "tmix": 90.16, "ssmix": 90.24,
                     "ssmix-nosal": 89.56, "ssmix-nosal-nospan": 89.20, "unk": 89.24},
    "anli dev_r1": {"none": 56.40, "embedmix": 56.78, "tmix": 56.68, "ssmix": 57.26,
                    "ssmix-nosal": 57.04, "ssmix-nosal-nospan": 56.74, "unk": 56.98},
    "anli dev_r2": {"none": 47.10, "embedmix": 47.84, "tmix": 47.58, "ssmix": 48.36,
                    "ssmix-nosal": 48.22, "ssmix-nosal-nospan": 47.52, "unk": 47.86},
    "anli dev_r3": {"none": 47.62, "embedmix": 47.67, "tmix": 47.78, "ssmix": 47.78,
                    "ssmix-nosal": 47.95, "ssmix-nosal-nospan": 47.77, "unk": 47.98},
    "anli test_r1": {"none": 57.16, "embedmix": 57.16, "tmix": 57.28, "ssmix": 57.34,
                     "ssmix-nosal": 57.16, "ssmix-nosal-nospan": 57.20, "unk": 57.26},
    "anli test_r2": {"none": 47.36, "embedmix": 47.42, "tmix": 47.90, "ssmix": 48.06,
                     "ssmix-nosal": 47.94, "ssmix-nosal-nospan": 47.90, "unk": 48.36},
    "anli test_r3": {"none": 48.00, "embedmix": 48.00, "tmix": 48.42, "ssmix": 48.00,
                     "ssmix-nosal": 48.07, "ssmix-nosal-nospan": 48.00, "unk": 48.32},
}
# Where our protocol differs from the paper's so much that its figure measures something else,
# the report prints no paper number, and says why.
NOT_COMPARABLE = {
    "trec-fine": "50 classes; the paper's TREC-f has 47 (run trec-fine-47 to compare)",
}

def paper_value(method: str, column: str) -> float | None:
    """The paper's figure for a row (a method, maybe with its mix ratio) and a column (a task, or
    ANLI's round and split), or None where the paper has none or measured something else."""
    if column.split(" ")[0] in NOT_COMPARABLE or method == PHASE2_CONTROL:
        return None
    return PAPER.get(column, {}).get(method.split(" ")[0])


@dataclass
class Record:
    """One finished cell run, as the report needs it."""

    task: str
    method: str                     # "none" for phase-1 runs (the No-mixup row)
    seed: int
    kind: str                       # phase1 / phase2
    metrics: dict[str, float]       # best_acc_<split> (%), phase2_best_acc_<split>, ...
    mix_ratio: str = ""
    curve: list[tuple[int, float]] = field(default_factory=list)   # (global step, accuracy %) of this run's phase
    curve_name: str = ""                                           # the metric: acc_<split> or selection_acc
    model: str = ""                                                # the run's `model` param


def columns_for(task: str) -> list[tuple[str, str]]:
    """(column name, metric suffix) for a task: one column, or ANLI's dev and test per round."""
    spec = TASKS.get(task)
    if spec is not None and len(spec.eval_splits) > 1:
        return [(f"{task} {split}", split) for split in spec.eval_splits]
    return [(task, "")]


def row_label(record: Record) -> str:
    return row_name(record.kind, record.method, float(record.mix_ratio) if record.mix_ratio else None)


def figure(record: Record, suffix: str, phase2_only: bool) -> float | None:
    """A run's figure in percent (``ssmix.sweep.results``: best over both phases or, with
    phase2_only, phase 2's own best) on split ``suffix``, else on the split a one-column table
    reports (never the held-out dev split a `selection: dev-split` sweep selects on)."""
    prefix = "phase2_best_acc_" if phase2_only and record.kind == "phase2" else "best_acc_"
    if not suffix:
        splits = [k.removeprefix("best_acc_") for k in record.metrics if k.startswith("best_acc_")]
        suffix = reported_split(splits) if splits else ""
    return record.metrics.get(prefix + suffix)


def reported_splits(records: list[Record]) -> dict[str, str]:
    """column -> the split its figures were measured on, for the table's header."""
    out: dict[str, str] = {}
    for record in records:
        for column, suffix in columns_for(record.task):
            splits = [k.removeprefix("best_acc_") for k in record.metrics if k.startswith("best_acc_")]
            if splits:
                out.setdefault(column, suffix or reported_split(splits))
    return out


@dataclass
class Report:
    columns: list[str]
    rows: list[str]
    values: dict[tuple[str, str], dict[int, float]]        # (row, column) -> seed -> accuracy %
    comparisons: dict[tuple[str, str], Comparison]
    baseline: str
    missing: list[str]
    superseded: int = 0     # runs of cells the sweep no longer plans, left out
    phase2_only: bool = False    # phase 2's own best: not the paper's figure, so no paper rows
    splits: dict[str, str] = field(default_factory=dict)     # column -> the split it reports

    def paper_rows(self, with_paper: bool) -> bool:
        return with_paper and not self.phase2_only

    def cell(self, row: str, column: str) -> tuple[float, float | None, int] | None:
        seeds = self.values.get((row, column))
        if not seeds:
            return None
        values = list(seeds.values())
        std = statistics.stdev(values) if len(values) > 1 else None
        return statistics.mean(values), std, len(values)

    def best_row(self, column: str) -> str | None:
        means = {r: self.cell(r, column)[0] for r in self.rows if self.cell(r, column)}
        return max(means, key=means.get) if means else None

    def emphasis(self, row: str, column: str) -> str:
        """"bold": the column's highest mean, and significantly above the baseline by the paired
        test (Holm-corrected); "best": the highest mean without that (descriptive only); "" else."""
        if self.best_row(column) != row:
            return ""
        comparison = self.comparisons.get((row, column))
        if comparison is not None and comparison.significant and (comparison.mean_diff or 0) > 0:
            return "bold"
        return "best"

    @property
    def testable(self) -> bool:
        """Whether any comparison had enough paired seeds for a test."""
        return any(c.n >= MIN_PAIRED_SEEDS for c in self.comparisons.values())


def build_report(records: list[Record], baseline: str = "none", phase2_only: bool = False,
                 missing: list[str] | None = None, superseded: int = 0) -> Report:
    values: dict[tuple[str, str], dict[int, float]] = {}
    columns: list[str] = []
    rows: list[str] = []
    for record in records:
        label = row_label(record)
        if label not in rows:
            rows.append(label)
        for column, suffix in columns_for(record.task):
            if column not in columns:
                columns.append(column)
            value = figure(record, suffix, phase2_only)
            if value is not None:
                values.setdefault((label, column), {})[record.seed] = value

    def row_key(label):
        base = label.split(" ")[0]
        return (METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER), label)

    def column_key(column):
        task = column.split(" ")[0]
        order = list(TASKS)
        return (order.index(task) if task in order else len(order), column)

    rows.sort(key=row_key)
    columns.sort(key=column_key)
    comparisons: dict[tuple[str, str], Comparison] = {}
    for row in rows:
        if row == baseline:
            continue
        for column in columns:
            if (row, column) in values and (baseline, column) in values:
                comparisons[(row, column)] = paired_comparison(values[(row, column)], values[(baseline, column)])
    tested = [key for key, c in comparisons.items() if c.p_value is not None]
    for key, adjusted in zip(tested, holm([comparisons[k].p_value for k in tested])):
        comparisons[key].p_holm = adjusted
    return Report(columns, rows, values, comparisons, baseline, missing or [], superseded, phase2_only,
                  reported_splits(records))


# --------------------------------------------------------------------------------- rendering


def _fmt_cell(report: Report, row: str, column: str) -> str:
    cell = report.cell(row, column)
    if cell is None:
        return "–"
    mean, std, n = cell
    text = f"{mean:.2f} ± {std:.2f} ({n})" if std is not None else f"{mean:.2f} ± n/a ({n})"
    emphasis = report.emphasis(row, column)
    return f"**{text}**" if emphasis == "bold" else f"{text} †" if emphasis == "best" else text


def _fmt_diff(comparison: Comparison | None) -> str:
    if comparison is None:
        return "–"
    if comparison.mean_diff is None:
        return f"n/a (n={comparison.n})"
    if comparison.ci_low is None:
        return f"{comparison.mean_diff:+.2f} (n={comparison.n}, no test)"
    text = f"{comparison.mean_diff:+.2f} [{comparison.ci_low:+.2f}, {comparison.ci_high:+.2f}]"
    if comparison.p_value is None:
        return text + " p n/a"
    text += f" p={comparison.p_holm:.3f}" + (" *" if comparison.significant else "")
    return text + f"; detects ≥ {comparison.detectable:.2f}"



def _column_label(column: str, report: Report | None = None) -> str:
    """A task's label, with the split its figures were measured on (ANLI's columns name theirs)."""
    task, _, split = column.partition(" ")
    split = split or (report.splits.get(column, "") if report else "")
    return TASK_LABELS.get(task, task) + (f" {split}" if split else "")


def legend(report: Report) -> str:
    """What bold and † mean here, and, with too few seeds, that nothing can be significant."""
    text = ("Accuracy % (mean ± std over seeds, (n) seeds). Bold: the column's highest mean and "
            f"significantly above `{report.baseline}` (paired t-test, Holm-corrected, p < 0.05); "
            "†: the highest mean, not shown to differ (descriptive only).")
    if not report.testable:
        text += (f" With fewer than {MIN_PAIRED_SEEDS} paired seeds per comparison no difference can be "
                 "significant: nothing is bold, and the differences below are descriptive.")
    return text


def paper_notes(report: Report, models: set[str]) -> list[str]:
    """What differs between the paper's figures and ours, for every column that shows them."""
    if report.phase2_only:
        return ["these are phase 2's own best, the paper's figure is the best over both phases: no paper figures"]
    notes = []
    tasks = {column.split(" ")[0] for column in report.columns}
    if models and models != {"bert-base-uncased"}:
        notes.append(f"model: ours {', '.join(sorted(models))}; the paper's BERT-base-uncased "
                     f"(its figures are a reference, not the same measurement)")
    notes += [f"{TASK_LABELS.get(t, t)}: {why}: no paper figure" for t, why in NOT_COMPARABLE.items() if t in tasks]
    return notes


def superseded_note(count: int) -> str:
    return (f"Left out: {count} run(s) of cells the sweep file no longer plans (their settings or the "
            "code changed since; tag `ssmix.superseded`). `ssmix sweep gc FILE` archives them.")


def to_markdown(report: Report, with_paper: bool = False, title: str = "", models: set[str] = frozenset()) -> str:
    head = ["method"] + [_column_label(c, report) for c in report.columns]
    lines = [f"## {title}" if title else "", "", legend(report), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report.rows:
        label = METHOD_LABELS.get(row, row)
        lines.append("| " + " | ".join([label] + [_fmt_cell(report, row, c) for c in report.columns]) + " |")
        if report.paper_rows(with_paper):
            paper = [paper_value(row, c) for c in report.columns]
            lines.append("| " + " | ".join(["↳ paper"] + [f"{p:.2f}" if p is not None else "–" for p in paper]) + " |")
    if with_paper:
        lines += [""] + [f"Paper vs ours: {note}." for note in paper_notes(report, set(models))]
    lines += ["", f"Paired difference to `{report.baseline}` (same seed): mean [95% bootstrap CI], "
              "p from a paired t-test, Holm-corrected across the table; * = significant at 0.05; "
              f"detects ≥ d: the smallest true difference the test would find {DETECTION_POWER:.0%} of the time "
              "with these seeds and their spread (smaller real differences are likely missed).", "",
              "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report.rows:
        if row == report.baseline:
            continue
        cells = [_fmt_diff(report.comparisons.get((row, c))) for c in report.columns]
        lines.append("| " + " | ".join([METHOD_LABELS.get(row, row)] + cells) + " |")
    if report.missing:
        lines += ["", f"Not finished ({len(report.missing)}): " + ", ".join(report.missing)]
    if report.superseded:
        lines += ["", superseded_note(report.superseded)]
    return "\n".join(lines).strip() + "\n"


def to_csv(report: Report, path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "column", "mean", "std", "n", "seeds", "diff_vs_baseline", "ci_low", "ci_high",
                         "p_value", "p_holm", "significant", "detectable_diff", "paper"])
        for row in report.rows:
            for column in report.columns:
                cell = report.cell(row, column)
                if cell is None:
                    continue
                c = report.comparisons.get((row, column))
                seeds = ";".join(f"{s}:{v:.4f}" for s, v in sorted(report.values[(row, column)].items()))
                writer.writerow([row, column, f"{cell[0]:.4f}", "" if cell[1] is None else f"{cell[1]:.4f}", cell[2],
                                 seeds] + (["", "", "", "", "", "", ""] if c is None else [
                                     "" if c.mean_diff is None else f"{c.mean_diff:.4f}",
                                     "" if c.ci_low is None else f"{c.ci_low:.4f}",
                                     "" if c.ci_high is None else f"{c.ci_high:.4f}",
                                     "" if c.p_value is None else f"{c.p_value:.6f}",
                                     "" if c.p_holm is None else f"{c.p_holm:.6f}", c.significant,
                                     "" if c.detectable is None else f"{c.detectable:.4f}"]) +
                                [paper_value(row, column) or ""])


def to_html(report: Report, images: list[str], title: str, with_paper: bool = False,
            models: set[str] = frozenset()) -> str:
    def table(kind: str) -> str:
        head = "".join(f"<th>{html.escape(_column_label(c, report))}</th>" for c in report.columns)
        body = []
        for row in report.rows:
            if kind == "diff" and row == report.baseline:
                continue
            cells = []
            for column in report.columns:
                if kind == "acc":
                    text = _fmt_cell(report, row, column).replace("**", "")
                    cells.append(f"<td class='{report.emphasis(row, column)}'>{html.escape(text)}</td>")
                else:
                    c = report.comparisons.get((row, column))
                    klass = "sig" if c is not None and c.significant else ""
                    cells.append(f"<td class='{klass}'>{html.escape(_fmt_diff(c))}</td>")
            body.append(f"<tr><th>{html.escape(METHOD_LABELS.get(row, row))}</th>{''.join(cells)}</tr>")
            if kind == "acc" and report.paper_rows(with_paper):
                paper = [paper_value(row, c) for c in report.columns]
                body.append("<tr class='paper'><th>↳ paper</th>" + "".join(
                    f"<td>{'–' if p is None else f'{p:.2f}'}</td>" for p in paper) + "</tr>")
        return f"<table><tr><th>method</th>{head}</tr>{''.join(body)}</table>"

    pictures = "".join(f"<figure><img src='{html.escape(name)}' alt='{html.escape(name)}'></figure>" for name in images)
    missing = (f"<p class='missing'>Not finished ({len(report.missing)}): {html.escape(', '.join(report.missing))}</p>"
               if report.missing else "")
    if report.superseded:
        missing += f"<p class='note'>{html.escape(superseded_note(report.superseded)).replace('`', '')}</p>"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;color:#222}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #bbb;padding:4px 8px;text-align:right}} th:first-child{{text-align:left}}
td.bold{{font-weight:bold;background:#e8f4e8}} td.best{{background:#f4f4f4}} td.sig{{background:#fff0c0}}
tr.paper td,tr.paper th{{color:#777;font-size:90%}} img{{max-width:100%}}
.missing{{color:#a00}}</style></head><body><h1>{html.escape(title)}</h1>
<h2>Accuracy % (mean ± std (n) over seeds)</h2><p>{html.escape(legend(report)).replace('`', '')}</p>{table('acc')}
{''.join(f"<p class='note'>Paper vs ours: {html.escape(n)}.</p>" for n in paper_notes(report, set(models))) if with_paper else ''}
<h2>Paired difference to {html.escape(report.baseline)} [95% bootstrap CI], Holm-corrected p</h2>
<p>Highlighted: significant at 0.05 after Holm correction. Detects ≥ d: the smallest true difference the
test would find {DETECTION_POWER:.0%} of the time with these seeds and their spread.</p>{table('diff')}{missing}{pictures}</body></html>
"""


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
        ax.set_title(_column_label(column))
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


def write_report(report: Report, records: list[Record], out: Path, with_paper: bool, title: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    models = {r.model for r in records if r.model}
    (out / "report.md").write_text(to_markdown(report, with_paper, title, models))
    to_csv(report, out / "report.csv")
    images = []
    if report.values:
        plot_accuracy(report, out / "accuracy.png")
        images.append("accuracy.png")
    if any(r.curve for r in records):
        plot_curves(records, out / "curves.png")
        images.append("curves.png")
    (out / "report.html").write_text(to_html(report, images, title, with_paper, models))
    return [out / name for name in ("report.md", "report.csv", "report.html", *images)]

