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
    with store.claim(cell.id):
        done = store.result(cell.id)
        if done is not None:   # another sweep trained it while this trial waited for the claim
            tune.report({"selection_accuracy": done.get("best_selection", float("nan")), "done": 1})
            return
        _train_claimed_cell(cell, store, config, started)


def _train_claimed_cell(cell: Cell, store: ResultStore, config: dict, started: float) -> None:
    work = store.cell_dir(cell.id) / "work"
    work.mkdir(parents=True, exist_ok=True)
    with open(store.cell_dir(cell.id) / "attempts.log", "a") as log:   # one line per training attempt
        log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} pid {os.getpid()}\n")
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
    """Logs each cell's evaluations into its one MLflow run, and prints the sweep's progress.

    The tracking server may go away during a sweep: a failed MLflow call never stops training.
    The cell is marked unsynced, MLflow is left alone for ``OFFLINE_SECONDS``, and the cell's
    stored result is pushed at the end of the sweep (or later by ``ssmix sweep sync``)."""

    OFFLINE_SECONDS = 15.0

    def __init__(self, tracker, parent_run_id: str, store: ResultStore, total: int, done_before: int):
        self.tracker, self.parent, self.store = tracker, parent_run_id, store
        self.early_stopping = False   # set while a stage runs under an early-stopping scheduler
        self.total, self.done, self.running, self.failed = total, done_before, 0, []
        self.failures: dict[str, str] = {}         # cell id -> why it failed
        self.unsynced: set[str] = set()
        self.offline_until = 0.0

    def _progress(self, event: str, label: str) -> None:
        pending = self.total - self.done - self.running - len(self.failed)
        print(f"[sweep] {event}: {label} | cells done {self.done}, running {self.running}, "
              f"pending {pending}, failed {len(self.failed)}", flush=True)

    def _track(self, cell_id: str, call) -> None:
        if time.monotonic() < self.offline_until:
            self.unsynced.add(cell_id)
            return
        try:
            call()
        except Exception as err:  # an unreachable or failing tracking server: keep training
            if time.monotonic() >= self.offline_until:
                print(f"[sweep] MLflow unreachable ({type(err).__name__}); training goes on, results are kept "
                      f"in storage and pushed to MLflow when it answers again", flush=True)
            self.offline_until = time.monotonic() + self.OFFLINE_SECONDS
            self.unsynced.add(cell_id)

    def on_trial_start(self, iteration, trials, trial, **info):
        cell = trial.config["cell"]
        self._track(cell["id"], lambda: self.tracker.cell_run(cell, self.parent))
        self.running += 1
        self._progress("started", Cell.from_dict(cell).label)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "evaluation_json" in result:
            cell = trial.config["cell"]
            evaluation = json.loads(result["evaluation_json"])
            self._track(cell["id"], lambda: self.tracker.log_evaluations(
                self.tracker.cell_run(cell, self.parent), [evaluation]))

    def on_trial_complete(self, iteration, trials, trial, **info):
        cell = trial.config["cell"]
        result = self.store.result(cell["id"])
        self.running -= 1
        if result is None and self.early_stopping:
            # Stopped by ASHA: recorded as a result, so a rerun does not train it again.
            last = trial.last_result or {}
            result = {"status": "stopped", "reason": "stopped early by the ASHA scheduler",
                      "last_selection_accuracy": last.get("selection_accuracy"),
                      "last_global_step": last.get("global_step")}
            self.store.write_result(Cell.from_dict(cell), result)
        if result is None:
            self._failed(cell, "trial ended without a result")
            return
        self.done += 1
        page = self.store.cell_dir(cell["id"]) / MIX_PAGE
        self._track(cell["id"], lambda: self.tracker.sync_cell(cell, result, self.parent,
                                                               artifacts=[page] if page.exists() else []))
        self._progress("finished", Cell.from_dict(cell).label)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.running -= 1
        try:
            reason = Path(trial.error_file).read_text().strip().splitlines()[-1]
        except (OSError, TypeError, IndexError):
            reason = "the trial raised (see Ray's logs)"
        self._failed(trial.config["cell"], reason)

    def _failed(self, cell: dict, reason: str) -> None:
        self.failed.append(cell["id"])
        self.failures[cell["id"]] = reason
        self._track(cell["id"], lambda: self.tracker.finish_cell(self.tracker.cell_run(cell, self.parent), {},
                                                                 failed_reason=reason))
        self._progress(f"FAILED ({reason[:200]})", Cell.from_dict(cell).label)


def sync_to_mlflow(tracker, cells: list[Cell], store: ResultStore, parent: str | None,
                   wait_seconds: float = 0.0) -> list[Cell]:
    """Push every stored result whose MLflow run is missing or unfinished; retry for up to
    ``wait_seconds`` while the server does not answer. Returns the cells still unsynced."""
    deadline = time.monotonic() + wait_seconds
    left = [c for c in cells if store.result(c.id) is not None]
    while True:
        failed = []
        for cell in left:
            try:
                tracker.sync_cell(cell.to_dict(), store.result(cell.id), parent)
            except Exception:
                failed.append(cell)
        if not failed or time.monotonic() >= deadline:
            return failed
        left = failed
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))


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
            name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",   # two drivers never share it
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
    """Train every cell without a finished result. Returns the exit status: 0 all done, 1 some
    cells failed, 3 all trained but MLflow could not be reached to record them."""
    from ssmix.sweep import preflight
    from ssmix.tracking import SweepTracker, check_tracking_uri, ui_command

    check_ray_address(address)
    check_tracking_uri(sweep.tracking)
    preflight(sweep)
    # A failing MLflow call must fail fast: the callback has its own buffer-and-retry.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    sweep_started = time.perf_counter()
    cells = plan_cells(sweep)
    store = ResultStore(sweep.sweep_dir())
    store.root.mkdir(parents=True, exist_ok=True)
    pending = [c for c in cells if store.result(c.id) is None]
    tracker = SweepTracker(sweep.tracking, sweep.name, lock_path=store.root / ".mlflow.lock")
    parent = tracker.start_parent(sweep_file, len(cells))
    # Cells finished in an earlier invocation whose run was not closed (a killed driver, an outage).
    sync_to_mlflow(tracker, [c for c in cells if c not in pending], store, parent)
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

    unsynced = sync_to_mlflow(tracker, cells, store, parent, wait_seconds=sweep.tracking_retry_seconds)
    missing = [c for c in cells if store.result(c.id) is None]
    summary = format_summary(rows_for_summary(cells, store))
    print("\n" + summary)
    if pending:
        trained = [c for c in pending if store.finished(c.id) is not None]
        cpus = ray.cluster_resources().get("CPU", 1)
        concurrency = min(len(trained) or 1, max(1, int(cpus // sweep.resources.cpu)))
        timing = timing_summary(trained, store, time.perf_counter() - sweep_started, concurrency)
        if timing:
            print("\n" + timing)
    if missing:
        print(f"\n[sweep] {len(missing)} cell(s) failed or have no result:")
        for cell in missing:
            print(f"  {cell.label}: {callback.failures.get(cell.id, 'not trained (its phase 1 failed)')}")
    try:
        tracker.finish_parent(parent, "FAILED" if missing or unsynced else "FINISHED", summary)
    except Exception:
        unsynced = unsynced or cells
    if unsynced:
        print(f"\n[sweep] MLflow at {sweep.tracking} did not answer for {sweep.tracking_retry_seconds:g} s: "
              f"{len(unsynced)} cell(s) are trained and stored under {store.root} but not in MLflow. "
              f"When it is back: ssmix sweep sync {sweep_file}")
        return 3
    print(f"\nMLflow: {ui_command(sweep.tracking)}  (experiment '{sweep.name}')")
    return 1 if missing else 0


def sync_sweep(sweep: SweepConfig, sweep_file: str) -> int:
    """``ssmix sweep sync``: push stored results to MLflow (after an outage); trains nothing."""
    from ssmix.tracking import SweepTracker, check_tracking_uri

    check_tracking_uri(sweep.tracking)
    cells = plan_cells(sweep)
    store = ResultStore(sweep.sweep_dir())
    tracker = SweepTracker(sweep.tracking, sweep.name, lock_path=store.root / ".mlflow.lock")
    parent = tracker.start_parent(sweep_file, len(cells))
    done = [c for c in cells if store.result(c.id) is not None]
    left = sync_to_mlflow(tracker, done, store, parent)
    tracker.finish_parent(parent, "FAILED" if left else "FINISHED", format_summary(rows_for_summary(cells, store)))
    print(f"[sweep] synced {len(done) - len(left)} of {len(done)} stored result(s) to {sweep.tracking}"
          + (f"; {len(left)} failed" if left else ""))
    return 3 if left else 0
