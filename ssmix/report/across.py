"""The comparison across tasks: per method, the mean and the IQM over every task and seed with
stratified bootstrap intervals, and the probability of improvement over the baseline (and between
any two methods asked for), as Agarwal et al. 2021 (rliable) define them (``ssmix.stats``).

Columns that are a held-out dev split (ANLI's dev rounds) are left out: the aggregate is over the
figures the table reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ssmix.report.table import Report
from ssmix.stats import Interval, across_tasks, probability_of_improvement


@dataclass
class AcrossRow:
    row: str
    tasks: list[str]
    mean: Interval
    iqm: Interval
    improvement: Interval | None          # P(row > baseline)


@dataclass
class AcrossTasks:
    baseline: str
    rows: list[AcrossRow]
    pairs: dict[tuple[str, str], Interval] = field(default_factory=dict)    # (A, B) -> P(A > B)

    @property
    def task_count(self) -> int:
        return max((len(r.tasks) for r in self.rows), default=0)


def reported_columns(report: Report) -> list[str]:
    return [c for c in report.columns if not c.partition(" ")[2].startswith("dev")]


def scores_of(report: Report, row: str) -> dict[str, list[float]]:
    return {column: list(report.values[(row, column)].values()) for column in reported_columns(report)
            if report.values.get((row, column))}


def across_tasks_table(report: Report, pairs: list[tuple[str, str]] = ()) -> AcrossTasks:
    """Every row of the report, aggregated over its tasks; ``pairs``: (A, B) rows compared too."""
    base = scores_of(report, report.baseline)
    rows = []
    for row in report.rows:
        scores = scores_of(report, row)
        if not scores:
            continue
        shared = row != report.baseline and bool(set(scores) & set(base))
        rows.append(AcrossRow(row, sorted(scores), across_tasks(scores, "mean"), across_tasks(scores, "iqm"),
                              probability_of_improvement(scores, base) if shared else None))
    compared = {}
    for a, b in pairs:
        for name in (a, b):
            if name not in report.rows:
                raise ValueError(f"--compare names {name!r}, which is not a row of this report; rows: "
                                 f"{', '.join(report.rows)}")
        first, second = scores_of(report, a), scores_of(report, b)
        if not set(first) & set(second):
            raise ValueError(f"--compare {a}:{b}: the two rows share no task")
        compared[(a, b)] = probability_of_improvement(first, second)
    return AcrossTasks(report.baseline, rows, compared)


def format_interval(interval: Interval | None, digits: int = 2) -> str:
    if interval is None:
        return "–"
    if interval.low is None:
        return f"{interval.value:.{digits}f} (no interval: a task with one seed)"
    return f"{interval.value:.{digits}f} [{interval.low:.{digits}f}, {interval.high:.{digits}f}]"
