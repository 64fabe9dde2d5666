"""Reading a sweep back from MLflow for the report, and archiving the runs it no longer plans."""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ssmix.sweep.cells import row_of
from ssmix.sweep.spec import shown_uri
from ssmix.tracking.layout import CELL_TAG, KIND_TAG, SUPERSEDED_TAG, TABLE2_VIEW_TAG, result_of_metrics, table2_link
from ssmix.tracking.runs import all_runs, http_status, search_cell_runs


def read_sweep_runs(tracking_uri: str, experiment_name: str, with_curves: bool = True):
    """The sweep's cell runs as report records, the labels of unfinished cells, the sweep's
    parent run's id (where the report is logged), and how many superseded runs were left out."""
    from ssmix.report import Record

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        names = [e.name for e in client.search_experiments()]
        raise ValueError(f"no MLflow experiment {experiment_name!r} at {shown_uri(tracking_uri)}; "
                         f"experiments there: {names}")
    runs = search_cell_runs(client, experiment.experiment_id)
    records, missing, superseded = [], [], 0
    curve_seeds = _curve_seeds(runs)
    for run in runs:
        tags = run.data.tags
        if SUPERSEDED_TAG in tags:
            superseded += 1
            continue
        if tags.get("ssmix.origin", "").startswith("search"):
            continue    # a search's proposals are configurations, not seeds of a row (`sweep best`)
        label = f"{tags.get('task')}/{tags.get('method')}/seed {tags.get('seed')} ({tags.get('phase')})"
        if run.info.status != "FINISHED" or not any(k.startswith("best_acc_") for k in run.data.metrics):
            state = ("stopped early" if "ssmix.stopped" in tags else "interrupted" if "ssmix.interrupted" in tags
                     else run.info.status.lower())
            missing.append(f"{label}: {state}")
            continue
        curve, key = [], "selection_acc" if "best_selection_acc" in run.data.metrics else _curve_key(run.data.metrics)
        if with_curves and int(tags["seed"]) in curve_seeds.get(tags["task"], ()):
            curve = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
        ratio = tags.get("mix_ratio")
        records.append(Record(task=tags["task"], row=row_of(tags["phase"], tags["method"], float(ratio) if ratio else None),
                              seed=int(tags["seed"]), kind=tags["phase"],
                              result=result_of_metrics(run.data.metrics, tags["phase"]),
                              curve=sorted(curve), curve_name=key, model=run.data.params.get("model", "")))
    parents = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{KIND_TAG}` = 'sweep'",
                                 order_by=["attributes.start_time ASC"], max_results=1)
    return records, missing, (parents[0].info.run_id if parents else None), superseded


CURVE_SEEDS = 10    # seeds per task whose learning curves the report draws: one read per run each


def _curve_seeds(runs) -> dict[str, set[int]]:
    """Per task, its first ``CURVE_SEEDS`` seeds (the same for every method, so a phase-2 curve
    continues its own seed's phase 1): the curves' reads stay bounded however many seeds a
    sweep has; their mean and band are drawn over these."""
    seeds: dict[str, set[int]] = {}
    for run in runs:
        if "seed" in run.data.tags and "task" in run.data.tags:
            seeds.setdefault(run.data.tags["task"], set()).add(int(run.data.tags["seed"]))
    return {task: set(sorted(found)[:CURVE_SEEDS]) for task, found in seeds.items()}


BUDGET_SERIES = ("budget_best_selection", "budget_best_selection_low", "budget_best_selection_high",
                 "budget_reported_acc")


def read_budget_curves(tracking_uri: str, experiment_name: str) -> dict:
    """task -> method -> series -> [(k, value)]: the budget curves the sweep's summary runs carry
    (one per task and method; every summary run of a method carries the same)."""
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return {}
    curves: dict = {}
    for run in all_runs(client, experiment.experiment_id, f"tags.`{KIND_TAG}` = 'summary'"):
        task, method = run.data.tags.get("task"), run.data.tags.get("method")
        if "budget_trials" not in run.data.metrics or method in curves.get(task, {}):
            continue
        curves.setdefault(task, {})[method] = {name: _latest_per_step(client.get_metric_history(run.info.run_id, name))
                                               for name in BUDGET_SERIES}
    return curves


def archive_superseded_runs(tracking_uri: str, experiment_name: str, planned_ids, dry_run: bool = False) -> list[str]:
    """``ssmix sweep gc``: delete (MLflow's soft delete, restorable) the runs of cells the sweep no
    longer plans. Returns their run ids."""
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    planned = set(planned_ids)
    runs = search_cell_runs(client, experiment.experiment_id)
    doomed = [r.info.run_id for r in runs if r.data.tags[CELL_TAG] not in planned]
    if not dry_run:
        for run_id in doomed:
            client.delete_run(run_id)
    return doomed


def _curve_key(metrics: dict) -> str:
    """The accuracy a run selects its checkpoint on: its one ``acc_<split>`` that is not dev's
    (dev when the sweep selects on a held-out dev split)."""
    splits = [k.removeprefix("best_acc_") for k in metrics if k.startswith("best_acc_")]
    return f"acc_{'dev' if 'dev' in splits else splits[0]}"


def _latest_per_step(history) -> list[tuple[int, float]]:
    """A metric's last value at each step (a curve logged again when its trials grew)."""
    latest = {}
    for metric in sorted(history, key=lambda m: m.timestamp):
        latest[metric.step] = metric.value
    return sorted(latest.items())


def table2_address(tracking_uri: str, experiment_name: str, ui_address: str) -> str | None:
    """The MLflow UI's address of the sweep's experiment opened on Table 2 (None if no sweep has
    shared that view there yet)."""
    experiment = MlflowClient(tracking_uri=tracking_uri).get_experiment_by_name(experiment_name)
    if experiment is None or TABLE2_VIEW_TAG not in experiment.tags:
        return None
    return table2_link(ui_address, experiment.experiment_id)


def log_report_artifacts(tracking_uri: str, run_id: str, paths) -> bool:
    """The report's files on the sweep's parent run; False when this user may only read it (403)."""
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        for path in paths:
            client.log_artifact(run_id, str(path), artifact_path="report")
    except (MlflowException, OSError) as err:     # the artifact proxy's refusal comes through requests
        if http_status(err) == 403:
            return False
        raise
    return True
