"""The comparison table: rows (methods), columns (tasks, ANLI's rounds), each seed's figure,
and the paired comparison of every row with the baseline."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from ssmix.methods import PHASE2_CONTROL
from ssmix.stats import MIN_PAIRED_SEEDS, Comparison, holm, paired_comparison
from ssmix.sweep.aggregate import task_order
from ssmix.sweep.cells import CellResult, Row, row_named
from ssmix.tasks import TASKS

METHOD_LABELS = {"none": "No mixup", "embedmix": "EmbedMix", "tmix": "TMix", "ssmix": "SSMix",
                 "ssmix-nosal": "SSMix − saliency", "ssmix-nosal-nospan": "SSMix − saliency − span",
                 "unk": "Random UNK", PHASE2_CONTROL: "No mixup, phase 2 (control)"}
TASK_LABELS = {"sst2": "SST-2", "qqp": "QQP", "mnli": "MNLI", "qnli": "QNLI", "rte": "RTE", "mrpc": "MRPC",
               "trec-coarse": "TREC-c", "trec-fine": "TREC-f (50)", "trec-fine-47": "TREC-f (47)"}


@dataclass
class Record:
    """One finished cell run, as the report needs it (``ssmix.tracking.read`` makes them)."""

    task: str
    row: Row
    seed: int
    kind: str                       # phase1 / phase2
    result: CellResult              # its figures: the same methods the sweep's own tables use
    curve: list[tuple[int, float]] = field(default_factory=list)   # (global step, accuracy %) of this run's phase
    curve_name: str = ""                                           # the metric: acc_<split> or selection_acc
    model: str = ""                                                # the run's `model` param


def row_label(name: str) -> str:
    """A row's name as the report prints it: "SSMix λ0=0.1", "No mixup"."""
    row = row_named(name)
    label = METHOD_LABELS.get(row.method, row.method)
    return label if row.mix_ratio is None else f"{label} λ0={row.mix_ratio:g}"


def columns_for(task: str) -> list[tuple[str, str]]:
    """(column name, split) for a task: one column (split "": the figure every table shows), or
    ANLI's dev and test per round."""
    spec = TASKS.get(task)
    if spec is not None and len(spec.eval_splits) > 1:
        return [(f"{task} {split}", split) for split in spec.eval_splits]
    return [(task, "")]


def column_value(record: Record, split: str, phase2_only: bool) -> float | None:
    """A run's figure in percent for a column: ``CellResult.figure`` for a one-column task, else
    that split's accuracy (best over both phases, or phase 2's own best)."""
    if not split:
        return record.result.figure(phase2_only).value
    return record.result.accuracy(phase2_only).get(split)


def reported_splits(records: list[Record]) -> dict[str, str]:
    """column -> the split its figures were measured on, for the table's header."""
    out: dict[str, str] = {}
    for record in records:
        for column, split in columns_for(record.task):
            out.setdefault(column, split or record.result.figure().split)
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
        label = record.row.name
        if label not in rows:
            rows.append(label)
        for column, split in columns_for(record.task):
            if column not in columns:
                columns.append(column)
            value = column_value(record, split, phase2_only)
            if value is not None:
                values.setdefault((label, column), {})[record.seed] = value
    rows.sort(key=lambda name: row_named(name).sort_key())
    columns.sort(key=lambda column: task_order(column.split(" ")[0]) + (column,))
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
