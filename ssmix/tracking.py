"""MLflow logging for sweeps: the only module that imports mlflow.

- An experiment per sweep, a parent run per sweep invocation, one child run per cell.
- A cell's run is found again by its tag ``ssmix.cell`` (the cell's content hash), so a retried
  trial, a resumed sweep or a rerun of the same file reattaches to it instead of opening a new
  one; the map lives in MLflow itself, not in a driver's memory.
- Params once, when the run is created; metrics in batches (``log_batch``), each with its
  global step; a step already logged for a metric is never logged again.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from contextlib import nullcontext

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from ssmix.files import locked

CELL_TAG = "ssmix.cell"
PARENT_TAG = "mlflow.parentRunId"
BATCH_LIMIT = 1000


def _flatten(prefix: str, value, out: dict) -> dict:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = value
    return out


class SweepTracker:
    def __init__(self, tracking_uri: str, experiment_name: str, lock_path: str | os.PathLike | None = None):
        """lock_path: a file on the sweep's storage; drivers of the same sweep take it around
        find-or-create, so two sweeps started at once never open two runs for one cell."""
        self.uri = tracking_uri
        self.lock_path = lock_path
        # The first use creates (and migrates) a SQLite store and maybe the experiment: two
        # drivers doing that at once corrupt it, so they take turns.
        with self._locked():
            self.client = MlflowClient(tracking_uri=tracking_uri)
            experiment = self.client.get_experiment_by_name(experiment_name)
            self.experiment_id = (experiment.experiment_id if experiment is not None
                                  else self.client.create_experiment(experiment_name))
        self.experiment_name = experiment_name
        self._run_ids: dict[str, str] = {}

    def _locked(self):
        return locked(self.lock_path) if self.lock_path is not None else nullcontext()

    # ------------------------------------------------------------------------------ runs

    def start_parent(self, sweep_file: str, cells_planned: int) -> str:
        run = self.client.create_run(self.experiment_id, run_name=f"sweep {time.strftime('%Y-%m-%d %H:%M:%S')}",
                                     tags={"ssmix.kind": "sweep", "ssmix.sweep_file": sweep_file})
        self.client.log_param(run.info.run_id, "cells_planned", cells_planned)
        return run.info.run_id

    def find_cell_run(self, cell_id: str) -> str | None:
        if cell_id in self._run_ids:
            return self._run_ids[cell_id]
        runs = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{CELL_TAG}` = '{cell_id}'",
                                       max_results=2, order_by=["attributes.start_time ASC"])
        if runs:
            self._run_ids[cell_id] = runs[0].info.run_id
            return runs[0].info.run_id
        return None

    def cell_run(self, cell: dict, parent_run_id: str | None) -> str:
        """The cell's one run: reattached if it exists, created (with params and tags) if not."""
        with self._locked():
            return self._cell_run(cell, parent_run_id)

    def _cell_run(self, cell: dict, parent_run_id: str | None) -> str:
        run_id = self.find_cell_run(cell["id"])
        if run_id is not None:
            if self.client.get_run(run_id).info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
            return run_id
        tags = {CELL_TAG: cell["id"], "ssmix.kind": cell["kind"], "task": cell["task"], "method": cell["method"],
                "seed": str(cell["seed"]), "phase": cell["kind"],
                "mix_ratio": "" if cell["mix_ratio"] is None else str(cell["mix_ratio"])}
        if cell.get("phase1_id"):
            tags["ssmix.phase1_cell"] = cell["phase1_id"]
        if cell.get("origin"):          # "search <k>" or "confirm"
            tags["ssmix.origin"] = cell["origin"]
        if parent_run_id:
            tags[PARENT_TAG] = parent_run_id
        name = f"{cell['task']}/{cell['method'] if cell['kind'] == 'phase2' else 'phase1'}/s{cell['seed']}"
        if cell["kind"] == "phase2" and cell["mix_ratio"] is not None:
            name += f"/r{cell['mix_ratio']:.3g}"
        if cell.get("origin"):
            name += f"/{cell['origin'].replace(' ', '')}"     # search3, confirm
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        run_id = run.info.run_id
        params = {k: v for k, v in _flatten("", cell["trial"], {}).items() if v is not None}
        items = [Param(k, str(v)[:500]) for k, v in sorted(params.items())]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start:start + 100])
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "trial_config.json")
            with open(path, "w") as handle:
                json.dump(cell, handle, indent=2)
            self.client.log_artifact(run_id, path)
        self._run_ids[cell["id"]] = run_id
        return run_id

    # --------------------------------------------------------------------------- metrics

    def logged_steps(self, run_id: str, key: str) -> set[int]:
        return {m.step for m in self.client.get_metric_history(run_id, key)}

    def log_evaluations(self, run_id: str, evaluations: list[dict], skip_logged: bool = True) -> int:
        """Log each evaluation (phase, global_step, accuracy per split, selection, train_loss,
        examples_per_sec) once per step; returns how many evaluations were new."""
        already = self.logged_steps(run_id, "selection_accuracy") if skip_logged else set()
        metrics, new = [], 0
        timestamp = int(time.time() * 1000)
        for ev in evaluations:
            step = int(ev["global_step"])
            if step in already:
                continue
            new += 1
            values = {"selection_accuracy": ev["selection"], "train_loss": ev["train_loss"],
                      "examples_per_sec": ev["examples_per_sec"], "epoch": ev["epoch"]}
            values.update({f"accuracy_{split}": acc for split, acc in ev["accuracy"].items()})
            metrics += [Metric(key, float(value), timestamp, step) for key, value in values.items()]
        for start in range(0, len(metrics), BATCH_LIMIT):
            self.client.log_batch(run_id, metrics=metrics[start:start + BATCH_LIMIT])
        return new

    def finish_cell(self, run_id: str, result: dict, failed_reason: str | None = None, artifacts=()) -> None:
        if failed_reason:
            self.client.set_tag(run_id, "ssmix.error", failed_reason[:5000])
            self.client.set_terminated(run_id, status="FAILED")
            return
        history = []
        for phase in ("phase1", "phase2"):
            if result.get(phase):
                history += result[phase]["history"]
        self.log_evaluations(run_id, history)
        finals = {"best_selection_accuracy": result["best_selection"]}
        finals.update({f"best_accuracy_{s}": a for s, a in result["best_accuracy"].items()})
        for phase in ("phase1", "phase2"):
            if result.get(phase):
                finals[f"{phase}_best_selection_accuracy"] = result[phase]["best_selection"]
        timestamp = int(time.time() * 1000)
        tags = [RunTag("ssmix.best_phase", result["best_phase"])]
        where = result.get("placement") or {}     # the node, the GPUs Ray gave the trial, its device
        for key in ("node_ip", "node_id", "device"):
            if where.get(key):
                tags.append(RunTag(f"ssmix.{key}", str(where[key])))
        if "gpu_ids" in where:
            tags.append(RunTag("ssmix.gpu_ids", ",".join(where["gpu_ids"]) or "none"))
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), timestamp, 0) for k, v in finals.items()],
                              tags=tags)
        for path in artifacts:
            self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, status="FINISHED")

    def sync_cell(self, cell: dict, result: dict, parent_run_id: str | None, artifacts=()) -> bool:
        """Make the cell's run match its stored result (created if missing, metrics completed,
        closed). Returns False when it already did."""
        run_id = self.find_cell_run(cell["id"])
        if run_id is not None and self.client.get_run(run_id).info.status in ("FINISHED", "KILLED"):
            return False
        run_id = self.cell_run(cell, parent_run_id)
        if result.get("status") == "stopped":
            self.stop_cell(run_id, result["reason"])
        else:
            self.finish_cell(run_id, result, artifacts=artifacts)
        return True

    def stop_cell(self, run_id: str, reason: str) -> None:
        self.client.set_tag(run_id, "ssmix.stopped", reason)
        self.client.set_terminated(run_id, status="KILLED")

    def finish_parent(self, run_id: str, status: str, summary_markdown: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "summary.md")
            with open(path, "w") as handle:
                handle.write(summary_markdown + "\n")
            self.client.log_artifact(run_id, path)
        self.client.set_terminated(run_id, status=status)

    def cell_runs(self) -> list:
        return self.client.search_runs([self.experiment_id], filter_string=f"tags.`{CELL_TAG}` != ''",
                                       max_results=5000)


def check_tracking_uri(uri: str, timeout: float = 10.0) -> None:
    """Fail fast, with one line, when the tracking store cannot be reached."""
    import urllib.request

    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
                if response.status == 200:
                    return
        except OSError as err:
            raise ConnectionError(f"MLflow tracking server {uri} is unreachable ({getattr(err, 'reason', err)})") from None
        raise ConnectionError(f"MLflow tracking server {uri} did not answer /health with 200")
    if uri.startswith("sqlite:///"):
        folder = os.path.dirname(os.path.abspath(uri[len("sqlite:///"):]))
        if not os.path.isdir(folder):
            raise ConnectionError(f"MLflow tracking URI {uri}: folder {folder} does not exist")
        return
    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as err:
        raise ConnectionError(f"MLflow tracking URI {uri} is unusable ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''})") from None


def read_sweep_runs(tracking_uri: str, experiment_name: str, with_curves: bool = True):
    """The sweep's cell runs as report records, the labels of unfinished cells, and the latest
    parent run's id (where the report is logged)."""
    from ssmix.report import Record

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        names = [e.name for e in client.search_experiments()]
        raise ValueError(f"no MLflow experiment {experiment_name!r} at {tracking_uri}; experiments there: {names}")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{CELL_TAG}` != ''", max_results=5000)
    records, missing = [], []
    for run in runs:
        tags = run.data.tags
        label = f"{tags.get('task')}/{tags.get('method')}/seed {tags.get('seed')} ({tags.get('phase')})"
        if run.info.status != "FINISHED" or "best_selection_accuracy" not in run.data.metrics:
            state = "stopped early" if "ssmix.stopped" in tags else run.info.status.lower()
            missing.append(f"{label}: {state}")
            continue
        curve = []
        if with_curves:
            curve = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "selection_accuracy")]
        records.append(Record(task=tags["task"], method=tags["method"], seed=int(tags["seed"]), kind=tags["phase"],
                              metrics=dict(run.data.metrics), mix_ratio=tags.get("mix_ratio", ""), curve=sorted(curve)))
    parents = client.search_runs([experiment.experiment_id], filter_string="tags.`ssmix.kind` = 'sweep'",
                                 order_by=["attributes.start_time DESC"], max_results=1)
    return records, missing, (parents[0].info.run_id if parents else None)


def log_report_artifacts(tracking_uri: str, run_id: str, paths) -> None:
    client = MlflowClient(tracking_uri=tracking_uri)
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path="report")


def ui_command(tracking_uri: str) -> str:
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri}"
    return f"mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port 5000"

