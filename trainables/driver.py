"""The driver of ``ssmix sweep run``: one Tune run per invocation, whose searcher hands out cells
as their dependencies finish; the MLflow callback; the exit codes.

Every Ray call of the project lives in this package (STYLE: Ray's API moves). MLflow logging runs
here on the driver, in a Tune callback: a single writer, so a SQLite store never sees parallel
writers.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from ssmix.sweep.plan import (
    Cell,
    best_proposal,
    code_version,
    confirm_cell_pairs,
    dependents,
    plan_cells,
    plan_complete,
    search_cell_pair,
    search_proposals,
)
from ssmix.sweep.aggregate import summary_rows
from ssmix.sweep.invocations import Invocations
from ssmix.sweep.preflight import preflight
from ssmix.sweep.progress import Progress
from ssmix.sweep.results import objective
from ssmix.sweep.schedule import CellQueue, cell_costs
from ssmix.sweep.search import Proposal, ProposalLog, proposal_seed
from ssmix.sweep.spec import SweepConfig
from ssmix.sweep.store import ResultStore
from ssmix.sweep.summary import describe_best, format_summary, rows_for_summary, timing_summary
from trainables.cell import train_cell
from trainables.propose import tpe_proposal
from trainables.ray_watch import RayWatch

EXIT_OK, EXIT_FAILED_CELLS, EXIT_UNTRACKED, EXIT_RAY_LOST = 0, 1, 3, 4
EXIT_INTERRUPTED = 130    # the shell's code for a Ctrl-C


class Terminated(KeyboardInterrupt):
    """SIGTERM (`ray job stop`, a batch scheduler, `kill`): handled as Ctrl-C is."""


_received: list[str] = []     # the stop signals this driver has received ("Ctrl-C", "SIGTERM")


@contextmanager
def _stops_as_interrupts():
    """Ctrl-C and SIGTERM raise in the driver, so the invocation and the runs it started are
    closed as killed. Tune's own Ctrl-C handler is turned off: it would end the run quietly, as
    if every cell had failed, to save an experiment state we never resume from (our store is).
    Our handlers are installed explicitly: a process started in the background by a shell
    inherits SIGINT ignored, and Python then raises nothing on it."""
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    _received.clear()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    _catch_stop_signals()
    try:
        yield
    finally:
        if threading.current_thread() is threading.main_thread():
            for number, handler in previous.items():
                signal.signal(number, handler)


def _catch_stop_signals() -> None:
    """Also called after ``ray.init``: Ray's core worker installs its own SIGTERM handler, which
    aborts the process."""
    if threading.current_thread() is threading.main_thread():
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, _on_stop_signal)


def _on_stop_signal(signum, frame):
    name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    _received.append(name)
    raise KeyboardInterrupt(name) if signum == signal.SIGINT else Terminated(name)


class SearchFeeder:
    """Cells a search makes while the sweep runs: adaptive proposals while the budget of a (task,
    method) lasts (at most ``max_concurrent`` in flight), and the confirmation cells once its
    search is complete. Every proposal is logged before it is queued (``ssmix.sweep.search``)."""

    def __init__(self, sweep: SweepConfig, store: ResultStore, queue: CellQueue, progress: Progress, code: str):
        self.sweep, self.store, self.queue, self.progress, self.code = sweep, store, queue, progress, code
        self.confirmed: set[tuple[str, str]] = set()

    def top_up(self) -> None:
        if self.sweep.search is None:
            return
        for task, method, proposals in search_proposals(self.sweep, self.store):
            if self.sweep.search.algorithm == "tpe":
                proposals = self._propose(task, method, proposals)
            self._confirm(task, method, proposals)

    def _propose(self, task: str, method: str, proposals: list[dict]) -> list[dict]:
        search = self.sweep.search
        space = search.space_for(method)
        log = ProposalLog(self.store.sweep_dir / "search", task, method)
        while True:
            ids = [search_cell_pair(self.sweep, task, method, p, self.code, None)[1].id for p in proposals]
            in_flight = sum(1 for i in ids if i in self.queue.pending or i in self.queue.running)
            if in_flight >= search.max_concurrent:
                return proposals
            history = [(p, objective(self.store.result(i))) for p, i in zip(proposals, ids)]
            history = [(p, v) for p, v in history if v is not None]

            def make(index: int) -> Proposal:
                params = tpe_proposal(space, history, proposal_seed(search, task, method, index), search.startup_trials)
                return Proposal(index=index, params=params, seen=len(history))

            proposal = log.append(make, search.budget(method))
            if proposal is None:
                return proposals
            self._add(search_cell_pair(self.sweep, task, method, proposal.params, self.code,
                                       f"search {proposal.index}"))
            proposals = [p.params for p in log.read()]

    def _confirm(self, task: str, method: str, proposals: list[dict]) -> None:
        if (task, method) in self.confirmed:
            return
        best = best_proposal(self.sweep, task, method, proposals, self.store, self.code)
        if best is None:
            return
        self.confirmed.add((task, method))
        for pair in confirm_cell_pairs(self.sweep, task, method, best, self.code):
            self._add(pair)

    def _add(self, cells) -> None:
        for cell in cells:
            if cell is None:
                continue
            waiting = [cell] if cell.kind == "phase1" else []   # a phase 1 here has a phase 2 waiting for it
            done = not self.store.needs_training(cell, waiting)
            if self.queue.add(cell, cell_costs([cell])[cell.id], done=done):
                self.progress.total += 1


class CellSearcher(Searcher):
    """Hands Tune the next ready cell (``ssmix.sweep.schedule``): a phase-2 cell the moment its own
    phase-1 cell has a result. Its state is the result store, so a rerun rebuilds it from there."""

    def __init__(self, queue: CellQueue, store: ResultStore, progress: Progress, feeder: SearchFeeder):
        super().__init__(metric="selection_accuracy", mode="max")
        self.queue, self.store, self.progress, self.feeder = queue, store, progress, feeder
        self.trials: dict[str, str] = {}    # Tune trial id -> cell id

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True   # the cells are the search space

    def suggest(self, trial_id: str):
        self.feeder.top_up()
        cell = self.queue.pop()
        if cell is None:
            return Searcher.FINISHED if self.queue.finished else None   # None: ask again when a cell ends
        self.trials[trial_id] = cell.id
        return {"cell": cell.to_dict()}

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        cell_id = self.trials.pop(trial_id, None)
        if cell_id is None:
            return
        ok = self.store.finished(cell_id) is not None
        for blocked in self.queue.complete(cell_id, ok, "" if ok else "no result"):
            self.progress.blocked_cell(blocked.label, self.queue.blocked[blocked.id], blocked.id)

    def save(self, checkpoint_path: str) -> None:
        pass   # nothing to save: the store is the state (Tune's experiment restore is not used)

    def restore(self, checkpoint_path: str) -> None:
        pass


class Phase2ASHA(FIFOScheduler):
    """ASHA early stopping for phase-2 cells, one ASHA per task (accuracies of two tasks are not
    comparable), and in a search one per task and method (its proposals compete with each other).
    Phase 1 is shared by every method and always runs to the end; so does a search's confirmation
    of its best configuration on more seeds (seeds do not compete)."""

    def __init__(self, grace_period: int, reduction_factor: int):
        super().__init__()
        self.grace_period, self.reduction_factor = grace_period, reduction_factor
        self.per_task: dict[tuple[str, str], ASHAScheduler] = {}

    def _asha(self, trial) -> ASHAScheduler | None:
        cell = trial.config["cell"]
        if cell["kind"] != "phase2" or cell.get("origin") == "confirm":
            return None
        group = (cell["task"], cell["method"]) if cell.get("origin") else (cell["task"], "")
        if group not in self.per_task:
            self.per_task[group] = ASHAScheduler(
                time_attr="training_iteration", metric="selection_accuracy", mode="max", max_t=100_000,
                grace_period=self.grace_period, reduction_factor=self.reduction_factor)
        return self.per_task[group]

    def on_trial_add(self, tune_controller, trial):
        if (asha := self._asha(trial)) is not None:
            asha.on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result):
        asha = self._asha(trial)
        return TrialScheduler.CONTINUE if asha is None else asha.on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result):
        if (asha := self._asha(trial)) is not None and trial.trial_id in asha._trial_info:
            asha.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial):
        if (asha := self._asha(trial)) is not None and trial.trial_id in asha._trial_info:
            asha.on_trial_remove(tune_controller, trial)


class MlflowCellCallback(tune.Callback):
    """Logs each cell's evaluations into its one MLflow run as they come, records the cell when
    it ends (``SweepTracker.record_cell``, the same call every path makes), keeps the summary runs
    up to date, and tells ``Progress`` what happens.

    The tracking server may go away during a sweep: a failed MLflow call never stops training.
    The cell is marked unsynced, MLflow is left alone for ``OFFLINE_SECONDS``, and the cell's
    stored result is pushed at the end of the sweep (or later by ``ssmix sweep sync``)."""

    OFFLINE_SECONDS = 15.0

    def __init__(self, tracker, parent_run_id: str, store: ResultStore, progress: Progress, early_stopping: bool,
                 cells: list[Cell], recorded: set[str], ending: "EarlyEnd"):
        self.tracker, self.parent, self.store, self.progress = tracker, parent_run_id, store, progress
        self.ending = ending                       # once it has closed the invocation, MLflow is left alone
        self.early_stopping, self.cells = early_stopping, cells
        self.failures: dict[str, str] = {}         # cell id -> why it failed
        self.recorded = recorded                   # cells whose run matches their result
        self.started = ending.started              # cells this invocation started
        self.offline_until = 0.0
        self.mlflow_seconds = 0.0                  # spent in MLflow calls (the timing line)
        self.launched: dict[str, float] = {}       # cell id -> when Tune started its trial

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks into its experiment state (never restored from: the store is
        # the state); the invocation's locks and open lock file stay with the live callback.
        return {k: v for k, v in self.__dict__.items() if k != "ending"}

    def _track(self, call) -> bool:
        if time.monotonic() < self.offline_until:
            return False
        started = time.perf_counter()
        try:
            # One MLflow writer at a time: the Ray watch's thread may be closing the invocation,
            # and a run this callback touched after that would be RUNNING again.
            with self.ending.mlflow_lock:
                if self.ending.closed:
                    return False
                call()
            return True
        except Exception as err:  # an unreachable or failing tracking server: keep training
            if time.monotonic() >= self.offline_until:
                print(f"[sweep] an MLflow call failed ({type(err).__name__}: {str(err)[:200]}); training goes "
                      f"on, results are kept in storage and pushed to MLflow when it answers again", flush=True)
            self.offline_until = time.monotonic() + self.OFFLINE_SECONDS
            return False
        finally:
            self.mlflow_seconds += time.perf_counter() - started

    def on_trial_start(self, iteration, trials, trial, **info):
        cell = trial.config["cell"]
        self.launched.setdefault(cell["id"], time.time())
        self.started.add(cell["id"])
        self._track(lambda: self.tracker.cell_run(cell, self.parent))
        self.progress.started(Cell.from_dict(cell).label, cell["id"], self.store.cell_dir(cell["id"]))

    def on_step_end(self, iteration, trials, **info):
        self.progress.refresh()   # each running cell's step / total, from its trial's progress file

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "evaluation_json" in result:
            cell = trial.config["cell"]
            evaluation = json.loads(result["evaluation_json"])
            self._track(lambda: self.tracker.log_evaluations(self.tracker.cell_run(cell, self.parent), cell,
                                                             [evaluation]))

    def on_trial_complete(self, iteration, trials, trial, **info):
        cell = trial.config["cell"]
        result = self.store.result(cell["id"])
        if result is None and self.early_stopping and cell["kind"] == "phase2" and cell.get("origin") != "confirm":
            # Stopped by ASHA: recorded as a result, so a rerun does not train it again.
            last = trial.last_result or {}
            result = {"status": "stopped", "reason": "stopped early by the ASHA scheduler",
                      "last_selection_accuracy": last.get("selection_accuracy"),
                      "last_global_step": last.get("global_step")}
            self.store.write_result(Cell.from_dict(cell), result)
            self.store.release(Cell.from_dict(cell), keep_best_model=False)
        if result is None:
            self._failed(cell, "trial ended without a result")
            return
        self.failures.pop(cell["id"], None)    # an earlier attempt failed; this one finished
        if self._track(lambda: self.tracker.record_cell(cell, self.parent, result=result,
                                                        cell_dir=self.store.cell_dir(cell["id"]))):
            self.recorded.add(cell["id"])
            self._track(lambda: self.tracker.record_summaries(self.parent, summary_rows(self.cells, self.store)))
        self.progress.finished(Cell.from_dict(cell).label, cell["id"])

    def on_trial_error(self, iteration, trials, trial, **info):
        try:
            reason = Path(trial.error_file).read_text().strip().splitlines()[-1]
        except (OSError, TypeError, IndexError):
            reason = "the trial raised (see Ray's logs)"
        self._failed(trial.config["cell"], reason)

    def _failed(self, cell: dict, reason: str) -> None:
        self.failures[cell["id"]] = reason
        self._track(lambda: self.tracker.record_cell(cell, self.parent, failure=reason))
        self.progress.failed_cell(Cell.from_dict(cell).label, reason, cell["id"])


def sync_to_mlflow(tracker, cells: list[Cell], store: ResultStore, parent: str | None, recorded: set[str],
                   wait_seconds: float = 0.0) -> list[Cell]:
    """Record every stored result whose run does not match it yet (``record_cell``, idempotent);
    retry for up to ``wait_seconds`` while the server does not answer. ``recorded`` holds the
    cells known to match (they are skipped, and are never counted as missing from MLflow).
    Returns the cells still unrecorded."""
    deadline = time.monotonic() + wait_seconds
    left = [c for c in cells if c.id not in recorded and store.result(c.id) is not None]
    while True:
        failed = []
        for cell in left:
            try:
                tracker.record_cell(cell.to_dict(), parent, result=store.result(cell.id), cell_dir=store.cell_dir(cell.id))
                recorded.add(cell.id)
            except Exception:
                failed.append(cell)
        if not failed or time.monotonic() >= deadline:
            return failed
        left = failed
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))


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


def check_sweep(sweep: SweepConfig, address: str | None) -> None:
    """Every check a run makes before it trains: Ray address, tracking server, model, data, storage."""
    from ssmix.tracking import check_tracking_uri

    check_ray_address(address)
    check_tracking_uri(sweep.tracking)
    preflight(sweep, address)


def cells_to_train(cells: list[Cell], store: ResultStore) -> list[Cell]:
    """Cells without a result, and phase-1 cells whose collected weights a waiting phase 2 needs."""
    waiting = {first: [c for c in after if store.result(c.id) is None]
               for first, after in dependents(cells).items()}
    return [c for c in cells if store.needs_training(c, waiting.get(c.id, []))]


def _fit(sweep: SweepConfig, searcher: CellSearcher, callback: MlflowCellCallback, verbose: bool) -> None:
    if not verbose:
        # Tune's newer console output prints its configuration box (with an endless "number of
        # trials") and TensorBoard hints even at verbose=0; the classic reporter is silent at
        # verbose=0, and progress reaches the user through our callback.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Each cell asks for its task's resources (resources.per_task).
    # Tune lets a custom searcher have one trial pending at a time, so trials would start one by
    # one (each waits for the last one's worker to come up). Allow as many as the cluster could
    # start at once, like Tune's own grid generator does.
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG",
                          str(max(16, int(1.1 * ray.cluster_resources().get("CPU", 1)))))

    def resources(config: dict) -> tune.PlacementGroupFactory:
        wanted = sweep.resources.for_task(config["cell"]["task"])
        return tune.PlacementGroupFactory([{k: v for k, v in wanted.items() if v}])

    trainable = tune.with_resources(train_cell, resources)
    scheduler = (Phase2ASHA(sweep.scheduler.grace_period, sweep.scheduler.reduction_factor)
                 if sweep.scheduler else None)
    tuner = tune.Tuner(
        trainable,
        param_space={"sweep_dir": str(sweep.sweep_dir()), "keep_best_model": sweep.keep_best_model,
                     "cpu_fallback": sweep.resources.cpu_fallback},
        # Worker processes are reused from trial to trial (a fresh one costs its imports and first
        # calls, seconds per cell); the trainable releases its cell's claim before its last report
        # and hands its memory back after each trial (trainables.cell).
        # num_samples=-1: as many trials as the searcher hands out (it says when it has finished).
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1, scheduler=scheduler,
                                    max_concurrent_trials=sweep.max_concurrent_trials, reuse_actors=True,
                                    trial_name_creator=lambda trial: _cell_of(trial).label,
                                    trial_dirname_creator=lambda trial: _cell_of(trial).folder_name),
        run_config=tune.RunConfig(
            name=f"{sweep.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",   # two drivers never share it
            storage_path=str(sweep.sweep_dir() / "tune"),
            failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
            callbacks=[callback],
            verbose=2 if verbose else 0,
        ),
    )
    tuner.fit()


def _cell_of(trial) -> Cell:
    return Cell.from_dict(trial.config["cell"])


def _quiet_ray() -> None:
    """Ray's token-authentication banner asks nothing of the user of a local sweep."""
    import logging

    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)


def run_sweep(sweep: SweepConfig, sweep_file: str, address: str | None = None, verbose: bool = False) -> int:
    """Train every cell without a finished result. Returns the exit status: 0 all done, 1 some
    cells failed or were blocked, 3 all trained but MLflow could not be reached to record them."""
    from ssmix.tracking import SweepTracker

    check_sweep(sweep, address)
    # A failing MLflow call must fail fast: the callback has its own buffer-and-retry.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    sweep_started = time.perf_counter()
    store = ResultStore(sweep.sweep_dir())
    store.root.mkdir(parents=True, exist_ok=True)
    code = code_version()
    cells = plan_cells(sweep, code, store)
    with store.active(), _stops_as_interrupts():
        pending = cells_to_train(cells, store)
        tracker = SweepTracker(sweep.tracking, sweep.name, lock_path=store.root / ".mlflow.lock",
                               description=sweep.description)
        invocations = Invocations(store.root)
        _close_dead_invocations(invocations, tracker, cells, store)
        record = invocations.begin("run", sweep_file, len(cells))
        ending = EarlyEnd(sweep, store, cells, tracker, invocations, record)
        try:
            parent = tracker.sweep_run(sweep.name)
            tracker.record_invocations(parent, invocations.read())
            superseded = _mark_superseded(tracker, sweep, cells, store)
            recorded: set[str] = set()
            # Cells finished in an earlier invocation whose run does not match (a killed driver, an outage).
            sync_to_mlflow(tracker, [c for c in cells if c not in pending], store, parent, recorded)
            tracker.record_summaries(parent, summary_rows(cells, store))
            return _train_and_report(sweep, sweep_file, address, verbose, store, code, cells, pending, tracker,
                                     parent, ending, recorded, sweep_started, superseded)
        except BaseException as err:    # Ctrl-C, SIGTERM, a crash: this invocation's record says so
            # A signal may surface as another error first (the Ray processes of a terminal's
            # group get the Ctrl-C too), so what was received decides, not the exception's type.
            interrupted = isinstance(err, KeyboardInterrupt) or bool(_received)
            why = f"interrupted ({_received[0] if _received else 'Ctrl-C'})" if interrupted \
                else f"{type(err).__name__}: {err}"[:500]
            lost = None if interrupted or ending.watch is None else ending.watch.lost_now()
            if lost:
                ending.ray_lost(lost)    # a Ray error that surfaced before the watch saw it
            stopped = ending.stop("killed" if interrupted else "failed", why)
            if stopped is None:
                raise
            if interrupted and ray.is_initialized():
                ray.shutdown()     # the trials stop now, not whenever the process exits
            if not interrupted:
                raise
            print(f"\n[sweep] {why}: {stopped} running cell(s) stopped, recorded as killed. Run the same "
                  f"command again to continue; finished cells are kept.", flush=True)
            return EXIT_INTERRUPTED


class EarlyEnd:
    """Closing an invocation that ends before its sweep does: Ctrl-C or SIGTERM (killed), a crash,
    or the driver's Ray lost (failed). Storage first (`ray job stop` sends SIGKILL 3 s after
    SIGTERM), then MLflow. Whoever comes first closes it; the lock makes that once."""

    def __init__(self, sweep: SweepConfig, store: ResultStore, cells: list[Cell], tracker, invocations: Invocations,
                 record: dict):
        self.sweep, self.store, self.cells, self.tracker = sweep, store, cells, tracker
        self.invocations, self.record = invocations, record
        self.started: set[str] = set()      # cells this invocation started training
        self.watch: RayWatch | None = None  # while its Ray runs trials
        self.mlflow_lock = threading.RLock()  # held by every MLflow call of the live callback
        self._lock = threading.Lock()

    @property
    def closed(self) -> bool:
        return self.record["status"] != "running"

    def stop(self, status: str, why: str) -> int | None:
        """Record the invocation as ``status`` and its unfinished cells' runs as KILLED. Returns
        how many cells it stopped, or None when the invocation was already closed."""
        with self._lock, self.mlflow_lock:
            if self.closed:
                return None
            unfinished = {cid for cid in self.started if self.store.result(cid) is None}
            finished = sum(self.store.result(c.id) is not None for c in self.cells)
            self.invocations.end(self.record, status, {"planned": len(self.cells), "finished": finished,
                                                       "stopped": len(unfinished)}, "", reason=why)
            try:
                self.tracker.stop_cell_runs(unfinished, f"invocation #{self.record['number']} stopped before this "
                                                        f"cell finished: {why}")
                self.tracker.record_invocations(self.tracker.sweep_run(self.sweep.name), self.invocations.read())
            except Exception:
                pass    # MLflow is away: the next invocation or `ssmix sweep sync` mirrors it
            return len(unfinished)

    def ray_lost(self, why: str) -> None:
        """Called by the Ray watch from its own thread: the main thread may be stuck inside Ray
        (its core worker retries a dead GCS for a minute), so the process ends here."""
        stopped = self.stop("failed", f"Ray was lost: {why}")
        if stopped is not None:
            print(f"\n[sweep] Ray was lost ({why}): {stopped} running cell(s) stopped, the invocation is recorded "
                  f"as failed. Check the Ray cluster (or just rerun, for a local Ray) and run the same command "
                  f"again; finished cells are kept.", flush=True)
        os._exit(EXIT_RAY_LOST)


def _mark_superseded(tracker, sweep: SweepConfig, cells: list[Cell], store: ResultStore, told: int = -1) -> int:
    """Tags true to the plan as it stands (see ``mark_superseded``); says so when the count is new."""
    count = tracker.mark_superseded({c.id for c in cells}, plan_complete(sweep, store))
    if count and count != told:
        print(f"[sweep] {count} MLflow run(s) belong to cells this file no longer plans (other settings or code): "
              f"tagged ssmix.superseded and left out of the report; `ssmix sweep gc` archives them", flush=True)
    return count


def _close_dead_invocations(invocations: Invocations, tracker, cells: list[Cell], store: ResultStore) -> None:
    """Earlier invocations whose driver died are closed as killed, and, when no other invocation
    is alive, the runs their cells left RUNNING become KILLED (nothing will finish them)."""
    closed = invocations.close_interrupted()
    if closed and not any(r["status"] == "running" for r in invocations.read()):
        numbers = ", ".join(f"#{r['number']}" for r in closed)
        try:
            tracker.stop_cell_runs({c.id for c in cells if store.result(c.id) is None},
                                   f"invocation {numbers} was killed before this cell finished")
        except Exception:
            pass    # MLflow is away: these runs stay RUNNING until the cell is trained and recorded


def _train_and_report(sweep, sweep_file, address, verbose, store, code, cells, pending, tracker, parent,
                      ending, recorded, sweep_started, superseded) -> int:
    from ssmix.tracking import ui_command

    done_before = len(cells) - len(pending)
    print(f"[sweep] {sweep.name}: {len(cells)} cells, {done_before} already done, {len(pending)} to train",
          flush=True)
    costs = cell_costs(pending)
    progress = Progress(len(cells), done_before, costs=costs if sweep.search is None else None)
    callback = MlflowCellCallback(tracker, parent, store, progress, early_stopping=sweep.scheduler is not None,
                                  cells=cells, recorded=recorded, ending=ending)
    pending_ids = {c.id for c in pending}
    queue = CellQueue(pending, costs,
                      satisfied={c.id for c in cells if c.kind == "phase1" and c.id not in pending_ids})
    feeder = SearchFeeder(sweep, store, queue, progress, code)
    feeder.top_up()   # a search may have proposals (or confirmations) to make before anything runs
    if not queue.finished:
        if not ray.is_initialized():
            # Trial output stays in Ray's logs (--verbose shows it); progress and failures reach
            # the user through the callback.
            if not verbose:
                _quiet_ray()
            # Without an address, a Ray of our own ("local"): given None, ray.init attaches to any
            # Ray it finds on the machine, e.g. another sweep's, and two drivers would then share
            # one cluster's CPUs and one's exit would take the other's trials with it.
            ray.init(address=address or "local", include_dashboard=False if address is None else None,
                     log_to_driver=verbose, configure_logging=False)
            _catch_stop_signals()
        ending.watch = RayWatch(ending.ray_lost).start()
        try:
            _fit(sweep, CellSearcher(queue, store, progress, feeder), callback, verbose)
        finally:
            ending.watch.stop()
            progress.close()
    cells = plan_cells(sweep, code, store)   # a search's proposals and confirmations are cells now
    pending = [c for c in cells if c.id in queue.started or c.id in pending_ids]

    unsynced = sync_to_mlflow(tracker, cells, store, parent, recorded, wait_seconds=sweep.tracking_retry_seconds)
    if not unsynced:   # the plan may have completed while the sweep ran (a search's confirmation)
        try:
            _mark_superseded(tracker, sweep, cells, store, told=superseded)
        except Exception:
            pass    # MLflow went away just now: the next invocation or `ssmix sweep sync` marks them
    missing = [c for c in cells if store.result(c.id) is None]
    summary = format_summary(rows_for_summary(cells, store))
    if sweep.search is not None:
        summary = describe_best(sweep, store) + "\n\n" + summary
    print("\n" + summary)
    trained = [c for c in pending if store.finished(c.id) is not None]
    if pending:
        cpus = ray.cluster_resources().get("CPU", 1) if ray.is_initialized() else 1
        concurrency = min(len(trained) or 1, max(1, int(cpus // sweep.resources.cpu)))
        timing = timing_summary(trained, store, time.perf_counter() - sweep_started, concurrency,
                                launched=callback.launched, mlflow_seconds=callback.mlflow_seconds)
        if timing:
            print("\n" + timing)
    if missing:
        print(f"\n[sweep] {len(missing)} cell(s) failed or have no result:")
        for cell in missing:
            why = callback.failures.get(cell.id) or queue.blocked.get(cell.id) or "not trained"
            print(f"  {cell.label}: {why}")
    counts = {"planned": len(cells), "finished": sum(store.finished(c.id) is not None for c in cells),
              "trained": len(trained), "failed": len(missing)}
    if unsynced:
        counts["not_in_mlflow"] = len(unsynced)
    reason = ("MLflow did not answer" if unsynced else "") or (f"{len(missing)} cell(s) failed" if missing else "")
    ending.invocations.end(ending.record, "failed" if missing or unsynced else "finished", counts, summary,
                           reason=reason)
    try:
        tracker.record_summaries(parent, summary_rows(cells, store))
        tracker.record_invocations(parent, ending.invocations.read())
    except Exception:
        unsynced = unsynced or [c for c in cells if c.id not in recorded]
    if unsynced:
        print(f"\n[sweep] MLflow at {sweep.tracking} did not answer for {sweep.tracking_retry_seconds:g} s: "
              f"{len(unsynced)} cell(s) are trained and stored under {store.root} but not in MLflow. "
              f"When it is back: ssmix sweep sync {sweep_file}")
        return EXIT_UNTRACKED
    pointers = [("the MLflow UI", f"{ui_command(sweep.tracking)}   (experiment '{sweep.name}')"),
                ("the report", f"ssmix report {sweep.name}{_uri_flag(sweep)} --out report/{sweep.name}")]
    if sweep.search is not None:
        pointers.append(("the best configuration", f"ssmix sweep best {sweep_file}"))
    print()
    for i, (what, command) in enumerate(pointers):
        print(f"{'Next:' if i == 0 else '':<6}{what:<24}{command}")
    return EXIT_FAILED_CELLS if missing else EXIT_OK


def _uri_flag(sweep: SweepConfig) -> str:
    default_uri = os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    return "" if sweep.tracking == default_uri else f" --tracking-uri {sweep.tracking}"


def sync_sweep(sweep: SweepConfig, sweep_file: str) -> int:
    """``ssmix sweep sync``: make MLflow match the store (after an outage): every cell's run, the
    summary runs, and the invocation log (an interrupted invocation is closed as killed); trains
    nothing."""
    from ssmix.tracking import SweepTracker, check_tracking_uri

    check_tracking_uri(sweep.tracking)
    store = ResultStore(sweep.sweep_dir())
    cells = plan_cells(sweep, store=store)
    tracker = SweepTracker(sweep.tracking, sweep.name, lock_path=store.root / ".mlflow.lock",
                           description=sweep.description)
    invocations = Invocations(store.root)
    _close_dead_invocations(invocations, tracker, cells, store)
    record = invocations.begin("sync", sweep_file, len(cells))
    parent = tracker.sweep_run(sweep.name)
    _mark_superseded(tracker, sweep, cells, store)
    done = [c for c in cells if store.result(c.id) is not None]
    left = sync_to_mlflow(tracker, done, store, parent, set())
    tracker.record_summaries(parent, summary_rows(cells, store))
    counts = {"planned": len(cells), "finished": sum(store.finished(c.id) is not None for c in cells),
              "recorded": len(done) - len(left)}
    invocations.end(record, "failed" if left else "finished", counts, format_summary(rows_for_summary(cells, store)),
                    reason=f"{len(left)} cell(s) could not be recorded" if left else "")
    tracker.record_invocations(parent, invocations.read())
    print(f"[sweep] synced {len(done) - len(left)} of {len(done)} stored result(s) to {sweep.tracking}"
          + (f"; {len(left)} failed" if left else ""))
    return EXIT_UNTRACKED if left else EXIT_OK
