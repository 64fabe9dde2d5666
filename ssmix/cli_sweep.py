"""The `ssmix sweep` commands: their flags and what each runs. Nothing heavy is imported before a
command needs it (`ssmix sweep status|plan|best|power` import no torch)."""

from __future__ import annotations

import os
from pathlib import Path

# Set once, at the start of `ssmix sweep run`, for this process and what it starts; a value the
# user set wins.
RUN_ENVIRONMENT = {
    # MLflow calls give up after one retry and 10 s: a tracking server that went away must not hold
    # training up (results stay on storage; the end of the run, or `sweep sync`, pushes them).
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    # Tune's own Ctrl-C handler would end the run quietly, as if every cell had failed, to save an
    # experiment state we never resume from (the store is the state).
    "TUNE_DISABLE_SIGINT_HANDLER": "1",
    # Tune's per-trial result files (CSV, JSON, TensorBoard): the store and MLflow keep every
    # result already; each costs writes per report and keeps a writer in the driver per trial.
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
}
# Without --verbose: Tune's classic console reporter, silent at verbose=0 (its newer one prints a
# configuration box and a table of every trial even there); Tune names this switch in its own log.
QUIET_TUNE_ENVIRONMENT = {"RAY_AIR_NEW_OUTPUT": "0"}
# For every command that writes to MLflow: a server prints "View run / View experiment" for each
# run ended; a sweep prints its one link at the end.
TRACKING_ENVIRONMENT = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}


def add_sweep_commands(sweep) -> None:
    """The subcommands of `ssmix sweep` (``sweep``: its subparsers)."""
    run = sweep.add_parser("run", help="train every cell of a sweep file that has no finished result")
    run.add_argument("file", help="a sweep file (YAML)")
    run.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else local)")
    run.add_argument("--dry-run", action="store_true", help="make every check a run makes (Ray address, tracking "
                     "server, model, data, storage) and print the cells, which are done, and the work left")
    run.add_argument("--verbose", action="store_true", help="also show Ray's and Tune's own output and the "
                     "trials' logs")
    run.add_argument("--in-process", action="store_true", help="train the cells one after another in this process, "
                     "without Ray (for debugging; no parallel cells, retries or early stopping)")
    status = sweep.add_parser("status", help="the cells of a sweep file, which are done, and the results so far")
    status.add_argument("file", help="a sweep file (YAML)")
    sync = sweep.add_parser("sync", help="push stored results to MLflow (after a tracking-server outage)")
    sync.add_argument("file", help="a sweep file (YAML)")
    plan = sweep.add_parser("plan", help="simulate the sweep's schedule on N workers from per-cell cost estimates")
    plan.add_argument("file", help="a sweep file (YAML)")
    plan.add_argument("--workers", type=int, default=8, help="equal workers (GPUs) to schedule on (default: 8)")
    plan.add_argument("--step-costs", default=None, help="a `ssmix bench step --json` file: measured step costs "
                      "relative to a plain step (default: 2 for every mixup method, the floor)")
    best = sweep.add_parser("best", help="a search's best configuration per task and method, and its "
                            "confirmation on more seeds")
    best.add_argument("file", help="a sweep file (YAML)")
    power = sweep.add_parser("power", help="seeds needed per task and comparison to detect a difference, from a "
                             "pilot sweep's spread")
    power.add_argument("file", help="a sweep file (YAML): its tasks, methods and planned seeds")
    power.add_argument("--delta", type=float, required=True, help="the difference to detect, in accuracy points")
    power.add_argument("--pilot", default=None, help="where the spread comes from: another sweep file with "
                       "results, or an `ssmix report` CSV (default: this file's own results)")
    power.add_argument("--baseline", default="none", help="the row differences are taken against (default: none)")
    power.add_argument("--power", type=float, default=None, help="the chance of finding δ (default: 0.8)")
    power.add_argument("--alpha", type=float, default=None, help="the test's level (default: 0.05)")
    gc = sweep.add_parser("gc", help="remove from storage what no cell of the sweep file needs")
    gc.add_argument("file", help="a sweep file (YAML)")
    gc.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")


def quiet_loggers() -> None:
    """A new SQLite store announces its table creation and migrations at INFO on the console:
    noise in a newcomer's first sweep output."""
    import logging

    for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run_sweep_command(args) -> int:
    from ssmix.sweep import load_sweep

    environment = dict(TRACKING_ENVIRONMENT)
    if args.which == "run":
        environment.update(RUN_ENVIRONMENT, **({} if args.verbose else QUIET_TUNE_ENVIRONMENT))
    for key, value in environment.items():
        os.environ.setdefault(key, value)
    quiet_loggers()
    sweep = load_sweep(args.file)
    if args.which == "status":
        from ssmix.sweep.summary import describe_plan

        print(describe_plan(sweep))
        return 0
    if args.which == "run" and args.dry_run:
        from ssmix.sweep.spec import shown_uri
        from ssmix.sweep.summary import describe_plan

        check_before_run(sweep, _address(args))   # raises, naming what would fail
        print(describe_plan(sweep))
        print(f"\nready: Ray address, tracking server ({shown_uri(sweep.tracking)}), model, data and storage_path "
              "checked")
        return 0
    if args.which == "plan":
        return run_plan(sweep, args)
    if args.which == "gc":
        return run_gc(sweep, args)
    if args.which == "best":
        from ssmix.sweep.store import ResultStore
        from ssmix.sweep.summary import describe_best

        print(describe_best(sweep, ResultStore.for_sweep(sweep)))
        return 0
    if args.which == "power":
        return run_power(sweep, args)
    if args.which == "sync":
        from ssmix.sweep.invocation import sync_sweep
        from ssmix.tracking import check_access, check_tracking_uri, tracker_for

        check_tracking_uri(sweep.tracking)
        check_access(sweep.tracking, sweep.name, write=True)
        return sync_sweep(sweep, args.file, tracker_for(sweep))
    check_before_run(sweep, None if args.in_process else _address(args))
    staged = stage_inputs(sweep)
    if args.in_process:
        from transformers.utils import logging as hf_logging

        from ssmix.cell_training import run_sweep_in_process

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()     # "Loading weights", "Writing model shards": per cell, in process
        return run_sweep_in_process(sweep, args.file, staged)
    from trainables.driver import run_sweep

    return run_sweep(sweep, args.file, address=_address(args), verbose=args.verbose, staged=staged)


def stage_inputs(sweep):
    """The sweep's data and model, fetched once into its storage before the first trial."""
    import time

    from ssmix.staging import stage
    from ssmix.sweep.storage import open_storage

    started = time.perf_counter()
    staged = stage(sweep, open_storage(sweep.sweep_url))
    model = f", the model in {staged.model}" if staged.model else ""
    print(f"[sweep] staged: the data in {staged.data}{model} ({time.perf_counter() - started:.1f} s); "
          f"trials read them from the sweep's storage", flush=True)
    return staged


def _address(args) -> str | None:
    return args.address or os.environ.get("RAY_ADDRESS")


def check_before_run(sweep, address: str | None) -> None:
    """Every check a run makes before it trains: the Ray address, the tracking store, model, data,
    storage; each problem raises, naming what would fail."""
    from ssmix.sweep.preflight import check_ray_address, preflight
    from ssmix.tracking import check_access, check_tracking_uri

    check_ray_address(address)
    check_tracking_uri(sweep.tracking)
    check_access(sweep.tracking, sweep.name, write=True)
    preflight(sweep, address)


def run_plan(sweep, args) -> int:
    from ssmix.sweep.plan import plan_cells
    from ssmix.sweep.schedule import cell_costs, describe_schedules, step_costs_from_bench
    from ssmix.sweep.store import ResultStore

    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    cells = plan_cells(sweep, store=ResultStore.for_sweep(sweep))
    if not cells:   # an adaptive search proposes its cells while it runs
        print(f"sweep {sweep.name}: no cells planned yet (a TPE search proposes them as results arrive)")
        return 0
    costs = cell_costs(cells, step_costs_from_bench(args.step_costs) if args.step_costs else None)
    print(describe_schedules(cells, costs, args.workers))
    return 0


def run_power(sweep, args) -> int:
    from ssmix.stats import ALPHA, DETECTION_POWER
    from ssmix.sweep import load_sweep
    from ssmix.sweep.power import figures_from_report_csv, figures_from_store, format_power, power_rows

    power = DETECTION_POWER if args.power is None else args.power
    alpha = ALPHA if args.alpha is None else args.alpha
    if not args.delta > 0:
        raise ValueError(f"--delta must be > 0 accuracy points, got {args.delta}")
    if not 0 < power < 1 or not 0 < alpha < 1:
        raise ValueError(f"--power and --alpha must be in (0, 1), got {power} and {alpha}")
    if args.pilot and args.pilot.endswith(".csv"):
        pilot, name = figures_from_report_csv(Path(args.pilot)), f"the report {args.pilot}"
    else:
        pilot_sweep = load_sweep(args.pilot) if args.pilot else sweep
        pilot, name = figures_from_store(pilot_sweep), f"sweep {pilot_sweep.name!r} ({pilot_sweep.sweep_url})"
    if not pilot:
        raise ValueError(f"{name} has no finished results to measure a spread from: run it first, or name "
                         f"another with --pilot (a sweep file or an `ssmix report` CSV)")
    rows = power_rows(sweep, pilot, args.delta, args.baseline, alpha, power)
    print(format_power(rows, args.delta, name, args.baseline, alpha, power))
    return 0


def run_gc(sweep, args) -> int:
    from ssmix.sweep.invocations import Invocations
    from ssmix.sweep.plan import plan_cells, plan_complete
    from ssmix.sweep.store import ResultStore, collect_garbage
    from ssmix.sweep.summary import human_bytes
    from ssmix.tracking import archive_superseded_runs

    store = ResultStore.for_sweep(sweep)
    cells = plan_cells(sweep, store=store)
    collected = collect_garbage(store, cells, keep_best_model=sweep.keep_best_model, dry_run=args.dry_run,
                                drivers_alive=Invocations(store.storage).any_alive(),
                                plan_complete=plan_complete(sweep, store))
    for key in collected.keys:
        print(f"  {key}")
    left = store.total_bytes() - (collected.bytes if args.dry_run else 0)
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {len(collected.keys)} path(s), {human_bytes(collected.bytes)}; "
          f"{human_bytes(left)} {'would be ' if args.dry_run else ''}left under {store.url}")
    archived = archive_superseded_runs(sweep.tracking, sweep.name, {c.id for c in cells}, dry_run=args.dry_run)
    if archived:
        print(f"{'would archive' if args.dry_run else 'archived'} {len(archived)} MLflow run(s) of cells the file no "
              f"longer plans (deleted in MLflow, restorable: mlflow runs restore --run-id ID)")
    return 0
