"""The comparison report: the paper's Table 2 from a sweep's MLflow runs, with seed statistics.

A package of pure functions over *records* (one per finished cell run: task, method, seed, metrics); the
MLflow reading is in ``ssmix.tracking``. Cells are ``mean ± std (n)`` over seeds; differences
to a baseline method are paired by seed, with a 95% bootstrap interval and a paired t-test
p-value, Holm-corrected across the table (``ssmix.stats``). Fewer than 3 paired seeds: "n/a",
never a number.

``table`` builds the table, ``paper`` holds the paper's figures, ``render`` writes Markdown, CSV
and HTML, ``plots`` the pictures; ``write_report`` writes them all.
"""

from __future__ import annotations

from pathlib import Path

from ssmix.report.across import AcrossTasks, across_tasks_table
from ssmix.report.paper import PAPER, paper_value
from ssmix.report.plots import plot_accuracy, plot_across, plot_budget, plot_curves
from ssmix.report.render import to_csv, to_html, to_markdown
from ssmix.report.table import Record, Report, build_report

__all__ = ["PAPER", "AcrossTasks", "Record", "Report", "across_tasks_table", "budget_note", "build_report",
           "paper_value", "to_csv", "to_html", "to_markdown", "write_report"]

# (task -> method -> series name -> [(k, value)]), as the summary runs carry it
BudgetCurves = dict[str, dict[str, dict[str, list[tuple[int, float]]]]]


def budget_note(curves: BudgetCurves) -> str:
    if not curves:
        return ""
    shown = "; ".join(f"{task}: " + ", ".join(f"{method} over {len(series['budget_best_selection'])} trials"
                                                for method, series in sorted(methods.items()))
                      for task, methods in sorted(curves.items()))
    return ("Against the search budget (budget.png; Dodge et al. 2019): the expected best selection score "
            f"after k of the finished trials, and the reported accuracy of the trial it selects ({shown}). "
            "Compare methods at the same k: a method given more trials looks better for that alone.")


def write_report(report: Report, records: list[Record], out: Path, with_paper: bool, title: str,
                 across: AcrossTasks | None = None, budget: BudgetCurves | None = None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    models = {r.model for r in records if r.model}
    note = budget_note(budget or {})
    (out / "report.md").write_text(to_markdown(report, with_paper, title, models, across, note))
    to_csv(report, out / "report.csv")
    images = []
    if report.values:
        plot_accuracy(report, out / "accuracy.png")
        images.append("accuracy.png")
    if across is not None and across.rows:
        plot_across(across, out / "across_tasks.png")
        images.append("across_tasks.png")
    if budget:
        plot_budget(budget, out / "budget.png")
        images.append("budget.png")
    if any(r.curve for r in records):
        plot_curves(records, out / "curves.png")
        images.append("curves.png")
    (out / "report.html").write_text(to_html(report, images, title, with_paper, models, across, note))
    return [out / name for name in ("report.md", "report.csv", "report.html", *images)]

