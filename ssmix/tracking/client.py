"""The MLflow calls of a sweep: its parent run, a run per cell, the summary runs, and the check
that a tracking store answers. The layout they write is ``ssmix.tracking`` (its docstring)."""

from __future__ import annotations

import functools
import json
import os
import tempfile
import time
from contextlib import nullcontext
from typing import Callable, ContextManager

from mlflow.entities import Metric, Param, RunTag
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient

from ssmix.sweep.aggregate import SummaryRow
from ssmix.sweep.cells import Cell, CellResult, Status
from ssmix.sweep.invocations import InvocationRecord
from ssmix.sweep.store import CELL_ARTIFACTS, MIX_PAGE_ERROR, ResultStore
from ssmix.sweep.tracker import TrackingUnavailable
from ssmix.tracking.datasets import dataset_inputs
from ssmix.tracking.layout import (
    BATCH_LIMIT,
    CELL_TAG,
    KIND_TAG,
    PARENT_TAG,
    RECORDED_TAG,
    STALE_TAGS,
    SUPERSEDED_TAG,
    SUPERSEDED_WHY,
    TABLE2_TAG,
    TABLE2_VIEW_TAG,
    digest,
    evaluation_metrics,
    final_metrics,
    run_params,
    run_tags,
    table2_link,
    table2_text,
    table2_view_state,
)
from ssmix.tracking.provenance import artifact_location, creator_tags
from ssmix.tracking.runs import TRANSPORT_ERRORS, all_runs, search_cell_runs

# The status a cell's run ends with, by how the cell ended.
ENDED_AS = {Status.FINISHED: "FINISHED", Status.STOPPED: "KILLED", Status.FAILED: "FAILED"}
def _transport(method):
    """A tracker call whose transport errors become ``TrackingUnavailable`` (one line, with the
    cause chained for the log)."""
    @functools.wraps(method)
    def call(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except TRANSPORT_ERRORS as err:
            first = str(err).splitlines()[0] if str(err) else ""
            raise TrackingUnavailable(f"{type(err).__name__}: {first[:300]}") from err
    return call


class SweepTracker:
    """The ``ssmix.sweep.tracker.Tracker`` of MLflow: every public call raises
    ``TrackingUnavailable`` on a transport error."""

    @_transport
    def __init__(self, tracking_uri: str, experiment_name: str, lock: Callable[[], ContextManager] | None = None,
                 description: str | None = None):
        """lock: a lock on the sweep's storage; drivers of the same sweep take it around
        find-or-create, so two sweeps started at once never open two runs for one cell."""
        self.uri = tracking_uri
        self.lock = lock
        # The first use creates (and migrates) a SQLite store and maybe the experiment: two
        # drivers doing that at once corrupt it, so they take turns.
        with self._locked():
            self.client = MlflowClient(tracking_uri=tracking_uri)
            experiment = self.client.get_experiment_by_name(experiment_name)
            self.experiment_id = (experiment.experiment_id if experiment is not None else self.client.create_experiment(
                experiment_name, artifact_location=artifact_location(tracking_uri, experiment_name)))
            tags = {"mlflow.experimentKind": "custom_model_development"}   # the model-training view, not GenAI's
            if description:
                tags["mlflow.note.content"] = description
            current = experiment.tags if experiment is not None else {}
            for key, value in tags.items():
                if current.get(key) != value:
                    self.client.set_experiment_tag(self.experiment_id, key, value)
        self.experiment_name = experiment_name
        self._run_ids: dict[str, str] = {}
        self._summary_runs: dict[str, object] = {}     # ssmix.group -> its run, as last written

    def _locked(self):
        return self.lock() if self.lock is not None else nullcontext()

    def _terminate(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status=status)

    def _find(self, filter_string: str) -> str | None:
        runs = self.client.search_runs([self.experiment_id], filter_string=filter_string, max_results=1,
                                       order_by=["attributes.start_time ASC"])
        return runs[0].info.run_id if runs else None

    # ------------------------------------------------------------------------- the parent

    @_transport
    def sweep_run(self) -> str:
        """The sweep's one parent run, created by the first invocation only."""
        with self._locked():
            run_id = self._find(f"tags.`{KIND_TAG}` = 'sweep'")
            if run_id is None:
                run_id = self.client.create_run(self.experiment_id, run_name=f"sweep · {self.experiment_name}",
                                                tags={KIND_TAG: "sweep", **creator_tags()}).info.run_id
            return run_id

    @_transport
    def record_invocations(self, parent_run_id: str, records: list[InvocationRecord]) -> None:
        """Mirror the invocation log onto the parent: the log and the latest summary as
        artifacts, counts as metrics (step = invocation number), and a status that tells the
        truth: RUNNING while an invocation runs, else how the latest one ended."""
        if not records:
            return
        latest = records[-1]
        closed = [r for r in records if not r.running]
        with tempfile.TemporaryDirectory() as tmp:
            log = os.path.join(tmp, "invocations.md")
            with open(log, "w") as handle:
                handle.write("# Invocations of this sweep\n\n" + "\n".join(f"- {r.describe()}" for r in records) + "\n")
            self.client.log_artifact(parent_run_id, log)
            if closed and closed[-1].summary:
                path = os.path.join(tmp, "summary.md")
                with open(path, "w") as handle:
                    handle.write(closed[-1].summary + "\n")
                self.client.log_artifact(parent_run_id, path)
        timestamp = int(time.time() * 1000)
        metrics = [Metric(f"cells_{key}", float(value), timestamp, r.number)
                   for r in closed for key, value in r.counts.items()]
        tags = [RunTag("ssmix.invocations", str(len(records))), RunTag("ssmix.last_invocation", latest.describe())]
        self.client.log_batch(parent_run_id, metrics=metrics, tags=tags)
        if any(r.running for r in records):
            status = "RUNNING"
        else:
            status = {"finished": "FINISHED", "failed": "FAILED", "killed": "KILLED"}[latest.status]
        if self.client.get_run(parent_run_id).info.status != status:
            if status == "RUNNING":
                self.client.update_run(parent_run_id, status="RUNNING")
            else:
                self._terminate(parent_run_id, status=status)

    # ---------------------------------------------------------------------------- cells

    def find_cell_run(self, cell_id: str) -> str | None:
        if cell_id not in self._run_ids:
            run_id = self._find(f"tags.`{CELL_TAG}` = '{cell_id}'")
            if run_id is None:
                return None
            self._run_ids[cell_id] = run_id
        return self._run_ids[cell_id]

    @_transport
    def start_cell(self, cell: Cell, parent_run_id: str | None) -> str:
        """The cell's one run: reattached if it exists, created if not (named, tagged, with its
        params and dataset inputs), and marked RUNNING, without the tags of how it ended before."""
        with self._locked():
            run_id = self.find_cell_run(cell.id)
            if run_id is None:
                tags = run_tags(cell)
                if parent_run_id:
                    tags[PARENT_TAG] = parent_run_id
                run_id = self.client.create_run(self.experiment_id, run_name=cell.run_name,
                                                tags={**tags, **creator_tags()}).info.run_id
                self._run_ids[cell.id] = run_id
                self._complete_inputs(run_id, cell)
            else:
                run = self.client.get_run(run_id)
                if run.info.status != "RUNNING":
                    self.client.update_run(run_id, status="RUNNING")
                for key in STALE_TAGS:      # why it stopped last time is history now
                    if key in run.data.tags:
                        self.client.delete_tag(run_id, key)
        return run_id

    def _complete_inputs(self, run_id: str, cell: Cell) -> None:
        """Params and dataset inputs, whichever are missing (a run created just before the
        server went away has none: they are completed on the next record)."""
        run = self.client.get_run(run_id)
        params = [Param(k, v) for k, v in run_params(cell).items() if k not in run.data.params]
        for start in range(0, len(params), 100):
            self.client.log_batch(run_id, params=params[start:start + 100])
        if not run.inputs.dataset_inputs:
            try:
                self.client.log_inputs(run_id, datasets=dataset_inputs(cell))
            except (OSError, ValueError):
                pass   # data not readable from the driver: the run is still recorded

    @_transport
    def log_evaluation(self, cell: Cell, parent_run_id: str | None, evaluation: dict) -> None:
        self._log_evaluations(self.find_cell_run(cell.id) or self.start_cell(cell, parent_run_id), cell, [evaluation])

    def _log_evaluations(self, run_id: str, cell: Cell, evaluations: list[dict]) -> int:
        """Log each evaluation once per step; returns how many were new."""
        already = {m.step for m in self.client.get_metric_history(run_id, "train_loss")}
        timestamp = int(time.time() * 1000)
        metrics, new = [], 0
        for evaluation in evaluations:
            step = int(evaluation["global_step"])
            if step in already:
                continue
            new += 1
            metrics += [Metric(key, float(value), timestamp, step)
                        for key, value in evaluation_metrics(cell, evaluation).items()]
        for start in range(0, len(metrics), BATCH_LIMIT):
            self.client.log_batch(run_id, metrics=metrics[start:start + BATCH_LIMIT])
        return new

    @_transport
    def record_cell(self, cell: Cell, parent_run_id: str | None, result: CellResult,
                    store: ResultStore | None = None) -> bool:
        """Make the cell's run match its result (finished, stopped early or failed): params,
        tags, dataset inputs, this phase's metric history (on a step axis that continues phase
        1's), final metrics, every artifact of the cell, the final status, and no stale error
        tag. The same call from every path; repeating it changes nothing. Returns False when the
        run already matched."""
        state = digest({"failure": result.reason} if result.status is Status.FAILED else result.to_json(cell))
        run_id = self.find_cell_run(cell.id)
        if run_id is not None:
            run = self.client.get_run(run_id)
            # Matched already, unless a driver that found the result stored (a second driver, a
            # retried trial) reopened the run meanwhile: then only its status is put back.
            if run.data.tags.get(RECORDED_TAG) == state:
                if run.info.status != ENDED_AS[result.status]:
                    self._terminate(run_id, status=ENDED_AS[result.status])
                return False
        run_id = self.start_cell(cell, parent_run_id)
        self._complete_inputs(run_id, cell)
        if result.status is Status.FAILED:
            self.client.set_tag(run_id, "ssmix.error", result.reason[:5000])
            self.client.set_tag(run_id, RECORDED_TAG, state)
            self._terminate(run_id, status="FAILED")
            return True
        run = self.client.get_run(run_id)
        for key in STALE_TAGS:
            if key in run.data.tags:
                self.client.delete_tag(run_id, key)
        if result.status is Status.STOPPED:
            self.client.set_tag(run_id, "ssmix.stopped", result.reason)
            self.client.set_tag(run_id, RECORDED_TAG, state)
            self._terminate(run_id, status="KILLED")
            return True
        self._log_evaluations(run_id, cell, result.history(cell.kind))
        timestamp = int(time.time() * 1000)
        tags = [RunTag("ssmix.best_phase", result.best_phase)]
        where = result.placement     # the node, the GPUs Ray gave the trial, its device
        if where is not None:
            for key in ("node_ip", "node_id", "device"):
                if getattr(where, key):
                    tags.append(RunTag(f"ssmix.{key}", str(getattr(where, key))))
            if where.gpu_ids is not None:
                tags.append(RunTag("ssmix.gpu_ids", ",".join(where.gpu_ids) or "none"))
        finals = [Metric(k, float(v), timestamp, 0) for k, v in final_metrics(cell, result).items()]
        self.client.log_batch(run_id, metrics=finals, tags=tags)
        self._complete_artifacts(run.info.artifact_uri, cell, store)
        warning = store.read_cell_file(cell.id, MIX_PAGE_ERROR) if store is not None else None
        if warning:
            self.client.set_tag(run_id, "ssmix.warning", warning[:5000])
        self.client.set_tag(run_id, RECORDED_TAG, state)
        self._terminate(run_id, status="FINISHED")
        return True

    @_transport
    def stop_cell_runs(self, cell_ids, reason: str) -> list[str]:
        """Runs of the given cells still RUNNING become KILLED, tagged with why (their training
        stopped with the invocation that ran it). A later ``record_cell`` clears the tag."""
        wanted = set(cell_ids)
        if not wanted:
            return []
        runs = search_cell_runs(self.client, self.experiment_id, "attributes.status = 'RUNNING'")
        stopped = []
        for run in runs:
            if run.data.tags.get(CELL_TAG) in wanted:
                self.client.set_tag(run.info.run_id, "ssmix.interrupted", reason)
                self._terminate(run.info.run_id, status="KILLED")
                stopped.append(run.data.tags[CELL_TAG])
        return stopped

    @_transport
    def mark_superseded(self, planned_ids, plan_complete: bool = True) -> int:
        """Tag the runs of cells the sweep no longer plans, so the report leaves them out (two runs
        of one seed would otherwise meet in one table cell); a run whose cell is planned again
        loses the tag. While the plan is not complete (a search still proposing) only the second
        happens: a run of a cell not planned yet may belong to the final plan. Nothing is deleted
        here (``ssmix sweep gc`` archives them). Returns how many runs are tagged superseded."""
        planned, superseded = set(planned_ids), 0
        for run in search_cell_runs(self.client, self.experiment_id):
            tagged = SUPERSEDED_TAG in run.data.tags
            if run.data.tags[CELL_TAG] in planned:
                if tagged:
                    self.client.delete_tag(run.info.run_id, SUPERSEDED_TAG)
                continue
            if not plan_complete:
                superseded += tagged
                continue
            superseded += 1
            if not tagged:
                self.client.set_tag(run.info.run_id, SUPERSEDED_TAG, SUPERSEDED_WHY)
        return superseded

    def _complete_artifacts(self, artifact_uri: str, cell: Cell, store: ResultStore | None) -> None:
        # The run's artifact store, made here and dropped after: MlflowClient keeps one per run it
        # wrote artifacts to (up to 1,024, each with its thread pool and queue), which made the
        # driver grow with every cell it recorded.
        repository = get_artifact_repository(artifact_uri, tracking_uri=self.uri)
        present = {a.path for a in repository.list_artifacts()}
        with tempfile.TemporaryDirectory() as tmp:
            if "trial_config.json" not in present:
                path = os.path.join(tmp, "trial_config.json")
                with open(path, "w") as handle:
                    json.dump(cell.to_dict(), handle, indent=2)
                repository.log_artifact(path)
        for name in CELL_ARTIFACTS if store is not None else ():
            if name in present:
                continue
            with store.artifact(cell.id, name) as path:
                if path is not None:
                    repository.log_artifact(str(path))

    # ------------------------------------------------------------------------- summaries

    @_transport
    def record_summaries(self, parent_run_id: str, rows: list[SummaryRow]) -> None:
        """One run per row (``ssmix.sweep.aggregate.Summaries``): a summary run per (task, row)
        and an aggregate run per row over the tasks; created once, their metrics logged again
        (step = seeds counted) when they change, with a row's series (the budget curve) at their
        own steps. The runs are looked up once; a row not seen yet is looked up again under the
        lock before it is created (another driver of the sweep may have made it)."""
        with self._locked():
            if not self._summary_runs:
                self._summary_runs = self._find_summary_runs()
            for row in rows:
                run = self._summary_runs.get(row.key)
                if run is None:
                    run = self._summary_runs.setdefault(row.key, self._find_summary_runs(row.key).get(row.key))
                self._record_summary(parent_run_id, row, run)
            self._share_table2_view()

    def _find_summary_runs(self, key: str | None = None) -> dict:
        query = "tags.`ssmix.group` != ''" if key is None else f"tags.`ssmix.group` = '{key}'"
        return {r.data.tags.get("ssmix.group"): r for r in all_runs(self.client, self.experiment_id, query)}

    def _record_summary(self, parent_run_id: str, row: SummaryRow, run) -> None:
        metrics = {k: round(float(v), 6) for k, v in row.metrics.items() if v is not None}
        tags = dict(row.tags, **{"ssmix.seeds": row.seeds})
        if row.kind == "summary":
            tags[TABLE2_TAG] = table2_text(metrics, row.tags["ssmix.baseline"])
        if run is not None and all(run.data.metrics.get(k) == float(v) for k, v in metrics.items()) \
                and all(run.data.tags.get(k) == v for k, v in tags.items()):
            return
        if run is None:
            created = dict(tags, **{KIND_TAG: row.kind, "ssmix.group": row.key, PARENT_TAG: parent_run_id},
                           **creator_tags())
            run_id = self.client.create_run(self.experiment_id, run_name=row.name, tags=created).info.run_id
        else:
            run_id = run.info.run_id
        timestamp = int(time.time() * 1000)
        step = int(metrics.get("n_seeds", metrics.get("n_scores", 0)))
        logged = [Metric(k, float(v), timestamp, step) for k, v in metrics.items()]
        if run is None or run.data.metrics.get("budget_trials") != metrics.get("budget_trials"):
            # a series is logged when its trials change, not again with each new seed
            logged += [Metric(name, round(float(value), 6), timestamp, int(k))
                       for name, points in row.series.items() for k, value in points]
        for start in range(0, len(logged), BATCH_LIMIT):
            self.client.log_batch(run_id, metrics=logged[start:start + BATCH_LIMIT],
                                  tags=[RunTag(k, v) for k, v in tags.items()] if start == 0 else [])
        self._terminate(run_id, status="FINISHED")
        self._summary_runs[row.key] = self.client.get_run(run_id)

    def _share_table2_view(self) -> None:
        """The experiment's Table 2 view (``table2_link`` opens it); written when it differs."""
        state = json.dumps(table2_view_state(), sort_keys=True)
        if self.client.get_experiment(self.experiment_id).tags.get(TABLE2_VIEW_TAG) != state:
            self.client.set_experiment_tag(self.experiment_id, TABLE2_VIEW_TAG, state)

    def table2_link(self, ui_address: str) -> str:
        return table2_link(ui_address, self.experiment_id)


def tracker_for(sweep) -> SweepTracker:
    """The tracker of a sweep (``ssmix.sweep.SweepConfig``): its store, experiment, description,
    and the lock its drivers share on the sweep's storage."""
    store = ResultStore.for_sweep(sweep)
    return SweepTracker(sweep.tracking, sweep.name, lock=lambda: store.storage.lock("cells/.mlflow.lock"),
                        description=sweep.description)
