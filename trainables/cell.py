"""Ray Tune: the function trainable for one cell and the driver that schedules a sweep.

Every Ray call of the project lives in this package (STYLE: Ray's API moves). The trainable is
wiring only: the fine-tune is ``ssmix.finetune``; MLflow logging runs on the driver, in a Tune
callback (a single writer, so a SQLite store never sees parallel writers).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import ray
import torch
from ray import tune

from ssmix.config import TrialConfig
from ssmix.finetune import PhaseResult, finetune
from ssmix.sweep import (
    Cell,
    ResultStore,
    SweepConfig,
    format_summary,
    plan_cells,
    rows_for_summary,
    timing_summary,
)


# ------------------------------------------------------------------------------ the trainable


def _restore_from_tune_checkpoint(work: Path) -> None:
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return
    with checkpoint.as_directory() as directory:
        for state in Path(directory).glob("phase*/state.pt"):
            target = work / state.parent.name / "state.pt"
            if not (work / state.parent.name / "result.json").exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(state, target)


FAULT_FILE = "inject-fault"
MIX_PAGE = "mix_examples.html"


def _maybe_inject_fault(cell_dir: Path) -> None:
    """Fault injection for the resilience tests: a file ``inject-fault`` in the cell's directory
    makes the trial fail once, right after its next checkpointed report: ``raise`` raises,
    ``kill`` SIGKILLs the worker process. The file is removed first, so the retry runs clean."""
    trigger = cell_dir / FAULT_FILE
    if not trigger.exists():
        return
    mode = trigger.read_text().strip() or "raise"
    trigger.unlink()
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError(f"injected fault ({FAULT_FILE} in {cell_dir})")


def train_cell(config: dict) -> None:
    """Train one cell (phase 1 of a (task, seed), or one phase-2 trial), reporting after every
    evaluation with a checkpoint, resuming from Tune's checkpoint after a failure."""
    started = time.perf_counter()
    cell = Cell.from_dict(config["cell"])
    store = ResultStore(Path(config["sweep_dir"]))
    work = store.cell_dir(cell.id) / "work"
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, int(config.get("cpus", 1))))
    _restore_from_tune_checkpoint(work)
    trial = TrialConfig(**cell.trial)

    def report(evaluation):
        payload = {k: v for k, v in evaluation.__dict__.items() if k != "checkpoint_dir"}
        metrics = {"selection_accuracy": evaluation.selection, "global_step": evaluation.global_step,
                   "evaluation_json": json.dumps(payload)}
        with tempfile.TemporaryDirectory() as tmp:
            state = Path(evaluation.checkpoint_dir) / "state.pt"
            if state.exists():
                (Path(tmp) / evaluation.phase).mkdir()
                shutil.copy2(state, Path(tmp) / evaluation.phase / "state.pt")
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))
        _maybe_inject_fault(store.cell_dir(cell.id))

    if cell.kind == "phase1":
        result = finetune(trial, work, phases=("phase1",), callback=report)
    else:
        first = store.result(cell.phase1_id)
        if first is None:
            raise RuntimeError(f"phase-1 cell {cell.phase1_id} has no result: phase 2 cannot start")
        result = finetune(trial, work, phases=("phase2",), phase1_checkpoint=store.phase1_checkpoint(cell.phase1_id),
                          phase1_result=PhaseResult(**first["phase1"]), callback=report)
    if cell.kind == "phase2" and cell.method == "ssmix":
        # A few training examples mixed as Figure 1 shows them, logged with the cell's run.
        from ssmix.show import write_mix_page

        write_mix_page(trial.task_name, trial.model, trial.data_dir, store.cell_dir(cell.id) / MIX_PAGE,
                       trial.mix_ratio, weights=str(store.phase1_checkpoint(cell.phase1_id)),
                       max_length=trial.max_length)
    phase = result.phase1 if cell.kind == "phase1" else result.phase2
    store.write_result(cell, {**result.to_json(), "timing": {
        "trial_wall_seconds": time.perf_counter() - started,   # this attempt, from start to result
        "train_seconds": phase.train_seconds, "eval_seconds": phase.eval_seconds}})
    tune.report({"selection_accuracy": result.best_selection, "done": 1})


# ---------------------------------------------------------------------------------- driver


class MlflowCellCallback(tune.Callback):
    """Logs each cell's evaluations into its one MLflow run, and prints the sweep's progress."""

    def __init__(self, tracker, parent_run_id: str, store: ResultStore, total: int, done_before: int):
        self.tracker, self.parent, self.store = tracker, parent_run_id, store
        self.early_stopping = False   # set while a stage runs under an early-stopping scheduler
        self.total, self.done, self.running, self.failed = total, done_before, 0, []

    def _progress(self, event: str, label: str) -> None:
        pending = self.total - self.done - self.running - len(self.failed)
        print(f"[sweep] {event}: {label} | cells done {self.done}, running {self.running}, "
              f"pending {pending}, failed {len(self.failed)}", flush=True)

    def on_trial_start(self, iteration, trials, trial, **info):
        cell = trial.config["cell"]
        self.tracker.cell_run(cell, self.parent)
        self.running += 1
        self._progress("started", Cell.from_dict(cell).label)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "evaluation_json" in result:
            run_id = self.tracker.cell_run(trial.config["cell"], self.parent)
            self.tracker.log_evaluations(run_id, [json.loads(result["evaluation_json"])])

    def on_trial_complete(self, iteration, trials, trial, **info):
        cell = trial.config["cell"]
        result = self.store.result(cell["id"])
        run_id = self.tracker.cell_run(cell, self.parent)
        self.running -= 1
        if result is None and self.early_stopping:
            # Stopped by ASHA: recorded as a result, so a rerun does not train it again.
            last = trial.last_result or {}
            stopped = {"status": "stopped", "reason": "stopped early by the ASHA scheduler",
                       "last_selection_accuracy": last.get("selection_accuracy"),
                       "last_global_step": last.get("global_step")}
            self.store.write_result(Cell.from_dict(cell), stopped)
            self.done += 1
            self.tracker.stop_cell(run_id, stopped["reason"])
        elif result is None:
            self.failed.append(cell["id"])
            self.tracker.finish_cell(run_id, {}, failed_reason="trial ended without a result")
        else:
            self.done += 1
            page = self.store.cell_dir(cell["id"]) / MIX_PAGE
            self.tracker.finish_cell(run_id, result, artifacts=[page] if page.exists() else [])
        self._progress("finished", Cell.from_dict(cell).label)

    def on_trial_error(self, iteration, trials, trial, **info):
        cell = trial.config["cell"]
        self.running -= 1
        self.failed.append(cell["id"])
        reason = str(getattr(trial, "error_file", "") or "trial raised")
        try:
            error_text = Path(trial.error_file).read_text().strip().splitlines()[-1] if trial.error_file else reason
        except OSError:
            error_text = reason
        self.tracker.finish_cell(self.tracker.cell_run(cell, self.parent), {}, failed_reason=error_text)
        self._progress(f"FAILED ({error_text[:200]})", Cell.from_dict(cell).label)


def _asha(sweep: SweepConfig):
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="training_iteration", metric="selection_accuracy", mode="max",
                         max_t=100_000, grace_period=sweep.scheduler.grace_period,
                         reduction_factor=sweep.scheduler.reduction_factor)


def _run_stage(name: str, cells: list[Cell], sweep: SweepConfig, callback: MlflowCellCallback,
               scheduler=None) -> None:
    if not cells:
        return
    callback.early_stopping = scheduler is not None
    trainable = tune.with_resources(train_cell, {"cpu": sweep.resources.cpu, "gpu": sweep.resources.gpu})
    tuner = tune.Tuner(
        trainable,
        param_space={"cell": tune.grid_search([c.to_dict() for c in cells]),
                     "sweep_dir": str(sweep.sweep_dir()), "cpus": sweep.resources.cpu},
        # Same resources for every cell: reuse worker processes instead of re-importing torch per trial.
        tune_config=tune.TuneConfig(max_concurrent_trials=sweep.max_concurrent_trials, reuse_actors=True,
                                    scheduler=scheduler),
        run_config=tune.RunConfig(
            name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(sweep.sweep_dir() / "tune"),
            failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[callback],
            verbose=0,
        ),
    )
    tuner.fit()


def check_ray_address(address: str | None, timeout: float = 10.0) -> None:
    """A cluster address that does not answer is a user error: say so before anything starts."""
    import socket
    from urllib.parse import urlparse

    if not address or address in ("auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    host, port = parsed.hostname, parsed.port
    if host is None or port is None:
        raise ConnectionError(f"Ray address {address!r} is not host:port or http://host:port")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        raise ConnectionError(f"Ray cluster at {address} is unreachable ({err.strerror or err})") from None


def run_sweep(sweep: SweepConfig, sweep_file: str, address: str | None = None) -> int:
    """Train every cell without a finished result; return the number of failed cells."""
    from ssmix.sweep import preflight
    from ssmix.tracking import SweepTracker, check_tracking_uri, ui_command

    check_ray_address(address)
    check_tracking_uri(sweep.tracking)
    preflight(sweep)
    sweep_started = time.perf_counter()
    cells = plan_cells(sweep)
    store = ResultStore(sweep.sweep_dir())
    pending = [c for c in cells if store.result(c.id) is None]
    tracker = SweepTracker(sweep.tracking, sweep.name)
    parent = tracker.start_parent(sweep_file, len(cells))
    # Cells finished in an earlier invocation whose run was not closed (a killed driver).
    for cell in cells:
        result = store.result(cell.id)
        if result is not None:
            run_id = tracker.find_cell_run(cell.id)
            if run_id is None or tracker.client.get_run(run_id).info.status != "FINISHED":
                tracker.finish_cell(tracker.cell_run(cell.to_dict(), parent), result)
    print(f"[sweep] {sweep.name}: {len(cells)} cells, {len(cells) - len(pending)} already done, "
          f"{len(pending)} to train", flush=True)
    callback = MlflowCellCallback(tracker, parent, store, len(cells), len(cells) - len(pending))
    if pending:
        # Tune's checkpoint-sync advice is noise here: our cells checkpoint at every evaluation on purpose.
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
        if not ray.is_initialized():
            # Trial output stays in Ray's logs; progress and failures reach the user through the callback.
            ray.init(address=address, include_dashboard=False if address is None else None,
                     log_to_driver=False, configure_logging=False)
        _run_stage(f"{sweep.name}-phase1", [c for c in pending if c.kind == "phase1"], sweep, callback)
        ready = [c for c in pending if c.kind == "phase2" and store.result(c.phase1_id) is not None]
        # Early stopping applies to phase 2 only: phase 1 is shared by every method and must finish.
        _run_stage(f"{sweep.name}-phase2", ready, sweep, callback, _asha(sweep) if sweep.scheduler else None)
    missing = [c for c in cells if store.result(c.id) is None]
    summary = format_summary(rows_for_summary(cells, store))
    tracker.finish_parent(parent, "FAILED" if missing else "FINISHED", summary)
    print("\n" + summary)
    if pending:
        trained = [c for c in pending if store.result(c.id) is not None]
        cpus = ray.cluster_resources().get("CPU", 1)
        concurrency = min(len(trained) or 1, max(1, int(cpus // sweep.resources.cpu)))
        timing = timing_summary(trained, store, time.perf_counter() - sweep_started, concurrency)
        if timing:
            print("\n" + timing)
    if missing:
        print(f"\n[sweep] {len(missing)} cell(s) have no result: " + ", ".join(c.label for c in missing))
    print(f"\nMLflow: {ui_command(sweep.tracking)}  (experiment '{sweep.name}')")
    return len(missing)
