"""What a cell's MLflow run shows: its name, tags, params and metrics. Pure: no mlflow import."""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache

from ssmix.methods import METHODS, MIXUP_SETTINGS
from ssmix.sweep.cells import SELECTION, Cell, CellResult, Scores, Status

CELL_TAG = "ssmix.cell"
KIND_TAG = "ssmix.kind"
PARENT_TAG = "mlflow.parentRunId"
RECORDED_TAG = "ssmix.recorded"     # digest of what the run was last made to match
STALE_TAGS = ("ssmix.error", "ssmix.stopped", "ssmix.interrupted")
# On runs of cells the sweep file no longer plans (its settings or the code changed since they ran).
SUPERSEDED_TAG = "ssmix.superseded"
SUPERSEDED_WHY = "not in the sweep file's current plan: its settings or the code changed since this run"
BATCH_LIMIT = 1000
MACHINE_SETTINGS = ("data_dir", "device", "eval_batch_size")    # where and how fast, not what


def _flatten(prefix: str, value, out: dict) -> dict:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = value
    return out


def _pct(fraction: float) -> float:
    """Accuracy in percent, rounded where float noise begins (90.4, not 90.39999999999999)."""
    return round(100.0 * fraction, 6)


def digest(obj) -> str:
    """A short hash of a JSON-able value: what a run was last made to match, a dataset's source."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_params(cell: Cell) -> dict[str, str]:
    """The settings that determine this run: phase 1's on phase-1 runs (a phase-2 run starts from
    phase 1's weights, so it carries both phases), a method's own settings only on its runs, no
    machine paths or devices."""
    trial = dict(cell.trial)
    if isinstance(trial.get("task"), dict):          # a custom task: its name, not its file paths
        trial["task"] = trial["task"]["name"]
    for key in MACHINE_SETTINGS:
        trial.pop(key, None)
    if trial.get("selection") != "dev-split":
        trial.pop("dev_fraction", None)
    own = METHODS[cell.method].reads if cell.kind == "phase2" else ()
    for key in MIXUP_SETTINGS:
        if key not in own:
            trial.pop(key, None)
    if cell.kind == "phase1":
        trial.pop("phase2", None)
        trial["method"] = "none"                     # phase 1 trains without mixup for every method
    return {k: str(v)[:500] for k, v in sorted(_flatten("", trial, {}).items()) if v is not None}


def run_tags(cell: Cell) -> dict[str, str]:
    """The tags a run is found and read back by (``ssmix.tracking.read``: its row from these)."""
    tags = {CELL_TAG: cell.id, KIND_TAG: cell.kind, "task": cell.task, "seed": str(cell.seed),
            "phase": cell.kind, "method": cell.method if cell.kind == "phase2" else "none"}
    if cell.row.mix_ratio is not None:
        tags["mix_ratio"] = f"{cell.row.mix_ratio:g}"
    if cell.phase1_id:
        tags["ssmix.phase1_cell"] = cell.phase1_id
    if cell.origin_label:          # "search <k>" or "confirm"
        tags["ssmix.origin"] = cell.origin_label
    return tags


def task_of(task):
    """A trial's task: a built-in's name, or a custom task's spec as it travels in JSON (a dict)."""
    from ssmix.tasks import TaskSpec, get_task

    return get_task(TaskSpec(**task) if isinstance(task, dict) else task)


@lru_cache(maxsize=None)
def _selects_on_several_splits(task_json: str) -> bool:
    return len(task_of(json.loads(task_json)).selection) > 1


def evaluation_metrics(cell: Cell, evaluation: dict) -> dict[str, float]:
    """One evaluation as metrics, accuracies in percent. The selection accuracy is logged only
    where it is not one split's accuracy (ANLI: the mean of the dev rounds)."""
    values = {f"acc_{split}": _pct(acc) for split, acc in evaluation["accuracy"].items()}
    if _selects_on_several_splits(json.dumps(cell.trial["task"])):
        values["selection_acc"] = _pct(evaluation["selection"])
    values.update(train_loss=evaluation["train_loss"], examples_per_sec=evaluation["examples_per_sec"],
                  epoch=evaluation["epoch"])
    return values


def final_metrics(cell: Cell, result: CellResult) -> dict[str, float]:
    """``best_acc_<split>``: each split at the checkpoint selected over both phases (for a task
    reported per round, ANLI, at its own round's best checkpoint); ``best_selection_acc`` where the
    figure is the selection accuracy (ANLI's mean of rounds); on phase-2 runs the same for phase
    2's own best, prefixed ``phase2_``. ``result_of_metrics`` reads them back."""
    finals = {}
    for prefix, phase2_only in (("", False), ("phase2_", True)):
        if phase2_only and (cell.kind != "phase2" or result.phase2_scores is None):
            continue
        finals.update({f"{prefix}best_acc_{split}": round(value, 6)
                       for split, value in result.accuracy(phase2_only).items()})
        if result.figure(phase2_only).split == SELECTION or _selects_on_several_splits(json.dumps(cell.trial["task"])):
            finals[f"{prefix}best_selection_acc"] = round(result.selection(phase2_only), 6)
    return finals


def result_of_metrics(metrics: dict[str, float], kind: str) -> CellResult:
    """A finished run's ``CellResult`` from the metrics ``final_metrics`` logged (``kind``: the
    run's phase): the report's figures are then the very methods the sweep's own tables use."""
    def scores(prefix: str) -> Scores | None:
        accuracy = {k.removeprefix(prefix + "best_acc_"): v / 100.0 for k, v in metrics.items()
                    if k.startswith(prefix + "best_acc_")}
        selection = metrics.get(prefix + "best_selection_acc")
        return Scores(None if selection is None else selection / 100.0, accuracy) if accuracy else None

    return CellResult(Status.FINISHED, scores(""), scores("phase2_") if kind == "phase2" else None)


# ------------------------------------------------------------------------------ Table 2 in the UI
# MLflow's UI opens an experiment in a shared view from its URL (`?viewStateShareKey=KEY`): the
# view is the JSON of the experiment tag `mlflow.sharedViewState.KEY` (the filter, the sort, the
# columns, their order and widths; read from MLflow 3's experiment page). The summary runs carry
# their row of Table 2 as one tag, so that it fits beside the columns MLflow always shows (run
# name, created, duration) and the assistant panel MLflow opens on a first visit to a local server.
TABLE2_TAG = "Table 2"
TABLE2_VIEW_KEY = "table2"
TABLE2_VIEW_TAG = f"mlflow.sharedViewState.{TABLE2_VIEW_KEY}"


def table2_view_state() -> dict:
    columns = ["metrics.`acc_mean`", f"tags.`{TABLE2_TAG}`"]
    return {"searchFilter": f"tags.`{KIND_TAG}` = 'summary'", "orderByKey": "metrics.`acc_mean`", "orderByAsc": False,
            "selectedColumns": columns,
            "columnOrder": ["attributes.`Run Name`", "runDateAndNestInfo", "duration"] + columns,
            "columnWidths": {"attributes.`Run Name`": 150, "runDateAndNestInfo": 50, "duration": 45,
                             "metrics.`acc_mean`": 70, f"tags.`{TABLE2_TAG}`": 290}}


def table2_link(ui_address: str, experiment_id: str) -> str:
    """The MLflow UI's address of the experiment opened on Table 2."""
    return f"{ui_address.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={TABLE2_VIEW_KEY}"


def table2_text(metrics: dict, baseline: str) -> str:
    """A summary run's row of Table 2 in one line: mean ± std (seeds), and Δ, the paired difference
    to the baseline, with its interval and p-value where there are enough seeds for them."""
    std, seeds = metrics.get("acc_std"), int(metrics["n_seeds"])
    text = f"{metrics['acc_mean']:.2f} ± {std:.2f} ({seeds})" if std is not None \
        else f"{metrics['acc_mean']:.2f} ({seeds} seed)"
    diff = metrics.get("diff_vs_baseline")
    if diff is None:
        if "n_paired" not in metrics:
            return text + " · the baseline"
        paired = int(metrics["n_paired"])
        return text + (f" · vs {baseline}: no shared seeds" if paired == 0 else
                       f" · vs {baseline}: {paired} shared seed, a difference needs 2")
    text += f" · Δ {diff:+.2f}"
    if metrics.get("diff_ci_low") is None:
        return text + f" (no test: {int(metrics.get('n_paired', 0))} seeds)"
    text += f" [{metrics['diff_ci_low']:+.2f}, {metrics['diff_ci_high']:+.2f}]"
    return text + (f" p={metrics['p_value']:.2f}" if metrics.get("p_value") is not None else "")
