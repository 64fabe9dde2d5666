"""The report as Markdown, CSV and HTML (from ``template.html``)."""

from __future__ import annotations

import csv
import html
from pathlib import Path
from string import Template

from ssmix.report.across import AcrossTasks, format_interval
from ssmix.report.paper import NOT_COMPARABLE, paper_value
from ssmix.report.table import TASK_LABELS, Report, row_label
from ssmix.stats import DETECTION_POWER, MIN_PAIRED_SEEDS, Comparison

TEMPLATE = Path(__file__).with_name("template.html")


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


def column_label(column: str, report: Report | None = None) -> str:
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


ACROSS_NOTE = ("the mean and the IQM (the mean of the middle 50%) over every task and seed, with 95% "
               "stratified bootstrap intervals (seeds resampled within each task); P(X > {baseline}): the chance "
               "that a run of X scores above a run of {baseline} on a task, averaged over the tasks (ties count "
               "half); as Agarwal et al. 2021 (rliable) define them. An interval above 0.5 says X is better "
               "on most runs; the mean says by how much.")


def across_markdown(across: AcrossTasks) -> list[str]:
    if not across.rows:
        return []
    baseline = row_label(across.baseline)
    lines = ["", f"Across tasks: {ACROSS_NOTE.format(baseline=f'`{across.baseline}`')}", "",
             f"| method | tasks | mean accuracy % | IQM accuracy % | P(method > {baseline}) |",
             "|---|---|---|---|---|"]
    for r in across.rows:
        tasks = ", ".join(column_label(t) for t in r.tasks)
        lines.append(f"| {row_label(r.row)} | {tasks} | {format_interval(r.mean)} | "
                     f"{format_interval(r.iqm)} | {format_interval(r.improvement)} |")
    for (a, b), interval in across.pairs.items():
        lines.append(f"\nP({row_label(a)} > {row_label(b)}) = {format_interval(interval)}")
    return lines


def to_markdown(report: Report, with_paper: bool = False, title: str = "", models: set[str] = frozenset(),
                across: AcrossTasks | None = None, budget_note: str = "") -> str:
    head = ["method"] + [column_label(c, report) for c in report.columns]
    lines = [f"## {title}" if title else "", "", legend(report), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report.rows:
        label = row_label(row)
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
        lines.append("| " + " | ".join([row_label(row)] + cells) + " |")
    if across is not None:
        lines += across_markdown(across)
    if budget_note:
        lines += ["", budget_note]
    if report.missing:
        lines += ["", f"Not finished ({len(report.missing)}): " + ", ".join(report.missing)]
    if report.superseded:
        lines += ["", superseded_note(report.superseded)]
    return "\n".join(lines).strip() + "\n"


def _num(value, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


CSV_COLUMNS = ["method", "column", "mean", "std", "n", "seeds", "diff_vs_baseline", "ci_low", "ci_high",
               "p_value", "p_holm", "significant", "detectable_diff", "paper"]


def to_csv(report: Report, path: Path) -> None:
    """One line per (row, column) with a figure; the comparison's fields empty for the baseline."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, restval="")
        writer.writeheader()
        for row in report.rows:
            for column in report.columns:
                cell = report.cell(row, column)
                if cell is None:
                    continue
                line = {"method": row, "column": column, "mean": _num(cell[0], 4), "std": _num(cell[1], 4),
                        "n": cell[2], "paper": paper_value(row, column) or "",
                        "seeds": ";".join(f"{s}:{v:.4f}" for s, v in sorted(report.values[(row, column)].items()))}
                c = report.comparisons.get((row, column))
                if c is not None:
                    line.update(diff_vs_baseline=_num(c.mean_diff, 4), ci_low=_num(c.ci_low, 4),
                                ci_high=_num(c.ci_high, 4), p_value=_num(c.p_value, 6), p_holm=_num(c.p_holm, 6),
                                significant=c.significant, detectable_diff=_num(c.detectable, 4))
                writer.writerow(line)


def _html_table(report: Report, kind: str, with_paper: bool) -> str:
    """The accuracy table (``kind`` "acc", with the paper's rows) or the differences ("diff")."""
    head = "".join(f"<th>{html.escape(column_label(c, report))}</th>" for c in report.columns)
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
        body.append(f"<tr><th>{html.escape(row_label(row))}</th>{''.join(cells)}</tr>")
        if kind == "acc" and report.paper_rows(with_paper):
            paper = [paper_value(row, c) for c in report.columns]
            body.append("<tr class='paper'><th>↳ paper</th>" + "".join(
                f"<td>{'–' if p is None else f'{p:.2f}'}</td>" for p in paper) + "</tr>")
    return f"<table><tr><th>method</th>{head}</tr>{''.join(body)}</table>"


def _html_across(across: AcrossTasks | None) -> str:
    if across is None or not across.rows:
        return ""
    baseline = row_label(across.baseline)
    body = "".join(
        f"<tr><th>{html.escape(row_label(r.row))}</th>"
        f"<td>{html.escape(', '.join(column_label(t) for t in r.tasks))}</td><td>{html.escape(format_interval(r.mean))}"
        f"</td><td>{html.escape(format_interval(r.iqm))}</td><td>{html.escape(format_interval(r.improvement))}</td></tr>"
        for r in across.rows)
    pairs = "".join(f"<p>P({html.escape(row_label(a))} &gt; {html.escape(row_label(b))}) = "
                    f"{html.escape(format_interval(i))}</p>" for (a, b), i in across.pairs.items())
    return (f"<h2>Across tasks</h2><p>{html.escape(ACROSS_NOTE.format(baseline=across.baseline))}</p>"
            f"<table><tr><th>method</th><th>tasks</th><th>mean accuracy %</th><th>IQM accuracy %</th>"
            f"<th>P(method &gt; {html.escape(baseline)})</th></tr>{body}</table>{pairs}")


def to_html(report: Report, images: list[str], title: str, with_paper: bool = False,
            models: set[str] = frozenset(), across: AcrossTasks | None = None, budget_note: str = "") -> str:
    missing = (f"<p class='missing'>Not finished ({len(report.missing)}): {html.escape(', '.join(report.missing))}</p>"
               if report.missing else "")
    if report.superseded:
        missing += f"<p class='note'>{html.escape(superseded_note(report.superseded)).replace('`', '')}</p>"
    notes = "".join(f"<p class='note'>Paper vs ours: {html.escape(n)}.</p>"
                    for n in paper_notes(report, set(models))) if with_paper else ""
    return Template(TEMPLATE.read_text()).substitute(
        title=html.escape(title), legend=html.escape(legend(report)).replace("`", ""),
        accuracy_table=_html_table(report, "acc", with_paper), paper_notes=notes,
        baseline=html.escape(report.baseline), power=f"{DETECTION_POWER:.0%}",
        difference_table=_html_table(report, "diff", with_paper), missing=missing,
        across=_html_across(across), budget=f"<p>{html.escape(budget_note)}</p>" if budget_note else "",
        pictures="".join(f"<figure><img src='{html.escape(name)}' alt='{html.escape(name)}'></figure>"
                         for name in images))
