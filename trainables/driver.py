"""The driver of ``ssmix sweep run`` on Ray: one Tune run per invocation, whose searcher hands out
cells as their dependencies finish; what happens when it is stopped or loses its Ray.

The steps of an invocation are the service's (``ssmix.sweep.invocation``), and so is what each
cell event records (``ssmix.sweep.events``); this module only starts Ray and Tune and translates.
Every Ray call of the project lives in this package (STYLE: Ray's API moves).
"""

from __future__ import annotations

import os
import time

import ray
from ray import tune

from ssmix.sweep import signals
from ssmix.sweep.cells import Cell
from ssmix.sweep.closing import Ran, cell_queue, close_run, open_run
from ssmix.sweep.events import CellEvents
from ssmix.sweep.feeder import SearchFeeder
from ssmix.sweep.invocation import EXIT_INTERRUPTED, EXIT_RAY_LOST, Invocation
from ssmix.sweep.plan import code_version
from ssmix.sweep.progress import Progress
from ssmix.sweep.schedule import cell_costs
from ssmix.sweep.spec import SweepConfig
from ssmix.sweep.store import ResultStore
from trainables.cell import train_cell
from trainables.ray_watch import RayWatch
from trainables.tune_parts import CellSearcher, Phase2ASHA, TuneEvents, cell_of


def tune_storage(url: str) -> dict:
    """Tune's ``storage_path`` (and ``storage_filesystem``) for its trial folders under ``url``.
    pyarrow, which Tune writes through, reads no AWS_ENDPOINT_URL: an S3-compatible server's
    endpoint is handed to it; any other fsspec store goes through fsspec itself."""
    if "://" not in url:
        return {"storage_path": url}
    import fsspec
    import pyarrow.fs

    scheme, path = url.split("://", 1)
    if scheme in ("s3", "s3a"):
        region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
        filesystem = pyarrow.fs.S3FileSystem(endpoint_override=os.environ.get("AWS_ENDPOINT_URL") or None,
                                             region=region or None)
        return {"storage_path": path, "storage_filesystem": filesystem}
    fs, path = fsspec.core.url_to_fs(url)
    return {"storage_path": path, "storage_filesystem": pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))}


def run_sweep(sweep: SweepConfig, sweep_file: str, address: str | None = None, verbose: bool = False,
              staged=None) -> int:
    """Train every cell without a finished result. Returns the exit status (``ssmix.sweep.invocation``):
    0 all done, 1 some cells failed or were blocked, 3 all trained but MLflow could not be reached
    to record them, 4 Ray was lost, 130 stopped by Ctrl-C or SIGTERM."""
    from ssmix.tracking import tracker_for

    store = ResultStore.for_sweep(sweep)
    with store.active(), signals.stops_as_interrupts():
        driver = RayDriver(sweep, Invocation(sweep, sweep_file, store, tracker_for(sweep)), address, verbose, staged)
        return driver.run()


class RayDriver:
    def __init__(self, sweep: SweepConfig, invocation: Invocation, address: str | None, verbose: bool, staged=None):
        self.sweep, self.invocation, self.address, self.verbose = sweep, invocation, address, verbose
        self.staged = staged         # the sweep's staged inputs (ssmix.staging.Staged), handed to every trial
        self.store = invocation.store
        self.watch: RayWatch | None = None     # while its Ray runs trials

    def run(self) -> int:
        ran = Ran(pending=set())
        code = code_version()
        try:
            cells, pending = open_run(self.invocation, code)
            ran.pending = {c.id for c in pending}
            events = self._train(cells, pending, code, ran)
            return close_run(self.invocation, events, ran, code)
        except BaseException as err:    # Ctrl-C, SIGTERM, a crash: this invocation's record says so
            return self._ended_early(err)

    def _train(self, cells: list[Cell], pending: list[Cell], code: str, ran: Ran) -> CellEvents:
        costs = cell_costs(pending)
        progress = Progress(len(cells), len(cells) - len(pending), costs=costs if self.sweep.search is None else None)
        events = CellEvents(self.store, self.invocation.recorder, progress,
                            early_stopping=self.sweep.scheduler is not None)
        queue = cell_queue(cells, pending, costs)
        feeder = SearchFeeder(self.sweep, self.store, queue, progress, code)
        feeder.top_up()   # a search may have proposals (or confirmations) to make before anything runs
        if not queue.finished:
            self._start_ray()
            self.watch = RayWatch(self._ray_lost).start()
            try:
                self._fit(CellSearcher(queue, self.store, progress, feeder), TuneEvents(events))
            finally:
                self.watch.stop()
                progress.close()
            cpus = ray.cluster_resources().get("CPU", 1)
            ran.concurrency = max(1, int(cpus // self.sweep.resources.cpu))
        ran.pending |= queue.started
        ran.blocked = queue.blocked
        return events

    def _start_ray(self) -> None:
        if ray.is_initialized():
            return
        if not self.verbose:
            import logging

            # The token-authentication banner asks nothing of a local sweep's user; and Tune's
            # results, which we never read (the store is the state), would warn once per trial
            # that its result file is missing (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS: none is written).
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
            logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
        # Trial output stays in Ray's logs (--verbose shows it); progress and failures reach the
        # user through the cell events. Without an address, a Ray of our own ("local"): given
        # None, ray.init attaches to any Ray it finds on the machine, e.g. another sweep's, and two
        # drivers would then share one cluster's CPUs and one's exit would take the other's trials.
        ray.init(address=self.address or "local", include_dashboard=False if self.address is None else None,
                 log_to_driver=self.verbose, configure_logging=False)
        signals.catch_stop_signals()

    def _fit(self, searcher: CellSearcher, callback: TuneEvents) -> None:
        sweep = self.sweep

        def resources(config: dict) -> tune.PlacementGroupFactory:   # each cell asks for its task's
            wanted = sweep.resources.for_task(config["cell"]["task"])
            return tune.PlacementGroupFactory([{k: v for k, v in wanted.items() if v}])

        scheduler = Phase2ASHA(sweep.scheduler.grace_period, sweep.scheduler.reduction_factor) \
            if sweep.scheduler else None
        tuner = tune.Tuner(
            tune.with_resources(train_cell, resources),
            param_space={"sweep_url": sweep.sweep_url, "keep_best_model": sweep.keep_best_model,
                         "staged": self.staged.to_dict() if self.staged is not None else None,
                         "cpu_fallback": sweep.resources.cpu_fallback},
            # Worker processes are reused from trial to trial (a fresh one costs its imports and
            # first calls, seconds per cell); the trainable releases its cell's claim before its
            # last report and hands its memory back after each trial (trainables.cell).
            # num_samples=-1: as many trials as the searcher hands out (it says when it has finished).
            # Tune lets a custom searcher have as many trials pending at once as its concurrency
            # limit (else one: trials would start one by one, each waiting for the last one's
            # worker): without a limit from the file, as many as the cluster could start at once,
            # like Tune's own grid generator.
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1, scheduler=scheduler,
                                        max_concurrent_trials=sweep.max_concurrent_trials or max(
                                            16, int(1.1 * ray.cluster_resources().get("CPU", 1))),
                                        reuse_actors=True,
                                        trial_name_creator=lambda trial: cell_of(trial).label,
                                        trial_dirname_creator=lambda trial: cell_of(trial).folder_name),
            run_config=tune.RunConfig(
                name=f"{sweep.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",   # two drivers never share it
                **tune_storage(f"{sweep.sweep_url}/tune"),
                failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
                callbacks=[callback],
                verbose=2 if self.verbose else 0,
            ),
        )
        tuner.fit()

    def _ended_early(self, err: BaseException) -> int:
        # A signal may surface as another error first (the Ray processes of a terminal's group get
        # the Ctrl-C too), so what was received decides, not the exception's type.
        received = signals.received
        interrupted = isinstance(err, KeyboardInterrupt) or bool(received)
        why = f"interrupted ({received[0] if received else 'Ctrl-C'})" if interrupted \
            else f"{type(err).__name__}: {err}"[:500]
        lost = None if interrupted or self.watch is None else self.watch.lost_now()
        if lost:
            self._ray_lost(lost)    # a Ray error that surfaced before the watch saw it
        stopped = self.invocation.stop("killed" if interrupted else "failed", why)
        if stopped is None or not interrupted:
            raise err
        if ray.is_initialized():
            ray.shutdown()     # the trials stop now, not whenever the process exits
        print(f"\n[sweep] {why}: {stopped} running cell(s) stopped, recorded as killed. Run the same "
              f"command again to continue; finished cells are kept.", flush=True)
        return EXIT_INTERRUPTED

    def _ray_lost(self, why: str) -> None:
        """Called by the Ray watch from its own thread: the main thread may be stuck inside Ray
        (its core worker retries a dead GCS for a minute), so the process ends here."""
        stopped = self.invocation.stop("failed", f"Ray was lost: {why}")
        if stopped is not None:
            print(f"\n[sweep] Ray was lost ({why}): {stopped} running cell(s) stopped, the invocation is recorded "
                  f"as failed. Check the Ray cluster (or just rerun, for a local Ray) and run the same command "
                  f"again; finished cells are kept.", flush=True)
        os._exit(EXIT_RAY_LOST)
