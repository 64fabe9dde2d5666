"""ssmix: SSMix and its baselines for any HuggingFace encoder, and sweeps on Ray Tune with MLflow.

Errors a user can cause (config, data, paths) end in one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pydantic

EXIT_USAGE = 2


class HelpFormatter(argparse.HelpFormatter):
    """Every flag's help ends with its default (unless it says it already, or there is none)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" not in text and action.option_strings and action.default not in (None, False)
                and action.default is not argparse.SUPPRESS and not isinstance(action, argparse._HelpAction)):
            shown = " ".join(map(str, action.default)) if isinstance(action.default, (list, tuple)) else action.default
            text += f" (default: {shown})"
        return text


def _fail(message: str) -> int:
    print(f"ssmix: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _pydantic_message(err: pydantic.ValidationError) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(x) for x in e["loc"]) or "config"
        parts.append(f"{where}: {e['msg']}")
    return "; ".join(parts)


# ------------------------------------------------------------------------------------ train


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    from ssmix.config import add_config_arguments

    parser.add_argument("--task", required=True, help="a task of `ssmix tasks`, or the name of --task-config's task")
    parser.add_argument("--task-config", default=None,
                        help="YAML declaring your own task: name, text_fields, label_field, num_labels, "
                             "eval_splits, data_files {split: file.csv|.jsonl}, optional label_map")
    add_config_arguments(parser, skip=("task",))   # every trial setting, generated from ssmix.config
    parser.add_argument("--phase1-checkpoint", default=None,
                        help="skip phase 1 and start phase 2 from this phase-1 best checkpoint (a model directory)")
    parser.add_argument("--out", default=None, help="output directory (default: runs/<task>-<method>-s<seed>)")


def trial_config_from_args(args):
    from ssmix.config import config_from_arguments

    task = args.task
    if args.task_config:
        import yaml

        from ssmix.tasks import TaskSpec

        path = Path(args.task_config)
        if not path.is_file():
            raise ValueError(f"task config {path} not found")
        spec = TaskSpec(**yaml.safe_load(path.read_text()))
        if spec.name != args.task:
            raise ValueError(f"--task {args.task!r} does not match the name {spec.name!r} in {path}")
        task = spec
    return config_from_arguments(args, task=task)


def run_train(args) -> int:
    from tqdm import tqdm
    from transformers.utils import logging as hf_logging

    from ssmix.finetune import finetune

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    config = trial_config_from_args(args)
    out = Path(args.out or f"runs/{config.task_name}-{config.method}-s{config.seed}")
    bars: dict[str, tqdm] = {}

    def on_step(phase, step, total):
        bar = bars.get(phase)
        if bar is None:
            for other in bars.values():
                other.close()
            bar = bars[phase] = tqdm(total=total, desc=phase, unit="step", dynamic_ncols=True)
            bar.update(step - 1)
        bar.update(1)

    def on_eval(report):
        accuracy = "  ".join(f"{split} {100 * acc:.2f}" for split, acc in report.accuracy.items())
        mark = " *" if report.is_best else ""
        line = (f"{report.phase} step {report.phase_step} (epoch {report.epoch:.2f}): {accuracy}  "
                f"loss {report.train_loss:.4f}  {report.examples_per_sec:.1f} ex/s{mark}")
        (bars[report.phase].write if report.phase in bars else print)(line)

    phases = ("phase2",) if args.phase1_checkpoint else ("phase1", "phase2")
    result = finetune(config, out, callback=on_eval, on_step=on_step, phases=phases,
                      phase1_checkpoint=args.phase1_checkpoint)
    for bar in bars.values():
        bar.close()
    print(f"\n{config.task_name} / {config.method} / seed {config.seed}")
    for phase in (result.phase1, result.phase2):
        if phase is not None:
            accuracy = "  ".join(f"{s} {100 * a:.2f}" for s, a in phase.best_accuracy.items())
            print(f"  {phase.phase} ({phase.method}): best at step {phase.best_step}: {accuracy}")
    accuracy = "  ".join(f"{s} {100 * a:.2f}" for s, a in result.best_accuracy.items())
    print(f"  best over both phases ({result.best_phase}): {accuracy}")
    print(f"summary: {out / 'summary.json'}")
    return 0


# ------------------------------------------------------------------------------------ sweep


def run_sweep_command(args) -> int:
    from ssmix.sweep import load_sweep

    sweep = load_sweep(args.file)
    if args.which == "status":
        from ssmix.sweep.summary import describe_plan

        print(describe_plan(sweep))
        return 0
    if args.which == "run" and args.dry_run:
        from ssmix.sweep.summary import describe_plan
        from trainables.driver import check_sweep

        check_sweep(sweep, args.address or os.environ.get("RAY_ADDRESS"))   # raises, naming what would fail
        print(describe_plan(sweep))
        print(f"\nready: Ray address, tracking server ({sweep.tracking}), model, data and storage_path checked")
        return 0
    if args.which == "plan":
        return run_plan(sweep, args)
    if args.which == "gc":
        return run_gc(sweep, args)
    if args.which == "best":
        from ssmix.sweep.store import ResultStore
        from ssmix.sweep.summary import describe_best

        print(describe_best(sweep, ResultStore(sweep.sweep_dir())))
        return 0
    if args.which == "power":
        return run_power(sweep, args)
    if args.which == "sync":
        from ssmix.sweep.invocation import sync_sweep
        from ssmix.tracking import check_tracking_uri, tracker_for

        check_tracking_uri(sweep.tracking)
        return sync_sweep(sweep, args.file, tracker_for(sweep))
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if args.in_process:
        from ssmix.cell_training import run_sweep_in_process

        return run_sweep_in_process(sweep, args.file)
    from trainables.driver import run_sweep

    return run_sweep(sweep, args.file, address=args.address or os.environ.get("RAY_ADDRESS"), verbose=args.verbose)


def run_plan(sweep, args) -> int:
    from ssmix.sweep.plan import plan_cells
    from ssmix.sweep.schedule import cell_costs, describe_schedules, step_costs_from_bench
    from ssmix.sweep.store import ResultStore

    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    cells = plan_cells(sweep, store=ResultStore(sweep.sweep_dir()))
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
        pilot, name = figures_from_store(pilot_sweep), f"sweep {pilot_sweep.name!r} ({pilot_sweep.sweep_dir()})"
    if not pilot:
        raise ValueError(f"{name} has no finished results to measure a spread from: run it first, or name "
                         f"another with --pilot (a sweep file or an `ssmix report` CSV)")
    rows = power_rows(sweep, pilot, args.delta, args.baseline, alpha, power)
    print(format_power(rows, args.delta, name, args.baseline, alpha, power))
    return 0


def run_gc(sweep, args) -> int:
    from ssmix.sweep.plan import plan_cells
    from ssmix.sweep.store import ResultStore, collect_garbage
    from ssmix.sweep.summary import human_bytes
    from ssmix.tracking import archive_superseded_runs

    store = ResultStore(sweep.sweep_dir())
    cells = plan_cells(sweep, store=store)
    collected = collect_garbage(store, cells, keep_best_model=sweep.keep_best_model, dry_run=args.dry_run)
    for path in collected.paths:
        print(f"  {path.relative_to(store.sweep_dir)}")
    left = store.total_bytes() - (collected.bytes if args.dry_run else 0)
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {len(collected.paths)} path(s), {human_bytes(collected.bytes)}; "
          f"{human_bytes(left)} {'would be ' if args.dry_run else ''}left under {store.sweep_dir}")
    archived = archive_superseded_runs(sweep.tracking, sweep.name, {c.id for c in cells}, dry_run=args.dry_run)
    if archived:
        print(f"{'would archive' if args.dry_run else 'archived'} {len(archived)} MLflow run(s) of cells the file no "
              f"longer plans (deleted in MLflow, restorable: mlflow runs restore --run-id ID)")
    return 0


# ----------------------------------------------------------------------------------- report


def _pairs(values: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        a, sep, b = value.partition(":")
        if not sep or not a or not b:
            raise ValueError(f"--compare {value!r}: expected two rows as A:B (e.g. ssmix:embedmix)")
        pairs.append((a, b))
    return pairs


def run_report(args) -> int:
    from ssmix.report import across_tasks_table, budget_note, build_report, to_markdown, write_report
    from ssmix.sweep.closing import ui_address
    from ssmix.tracking import log_report_artifacts, read_budget_curves, read_sweep_runs, table2_address

    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    records, missing, parent, superseded = read_sweep_runs(uri, args.experiment)
    report = build_report(records, baseline=args.baseline, phase2_only=args.phase2_only, missing=missing,
                          superseded=superseded)
    across = across_tasks_table(report, _pairs(args.compare))
    budget = read_budget_curves(uri, args.experiment)
    title = f"{args.experiment}: " + ("phase 2's best" if args.phase2_only else "best over both phases")
    print(to_markdown(report, args.paper, title, {r.model for r in records if r.model}, across, budget_note(budget)))
    if args.out:
        paths = write_report(report, records, Path(args.out), args.paper, title, across, budget)
        print("wrote " + ", ".join(str(p) for p in paths))
        if parent and not args.no_log:
            log_report_artifacts(uri, parent, paths)
            print(f"logged to MLflow run {parent} (artifacts/report/)")
    link = table2_address(uri, args.experiment, ui_address(uri))
    if link:
        print(f"Table 2 in MLflow: {link}")
    return 0


def run_show_mix(args) -> int:
    from rich.console import Console
    from transformers.utils import logging as hf_logging

    from ssmix.mixing import _check_ratio
    from ssmix.show import compute_mixes, load_examples, to_html, to_rich

    hf_logging.set_verbosity_error()
    _check_ratio(args.mix_ratio)
    model, tokenizer, batch, labels = load_examples(args.task, args.model, args.data_dir, args.n)
    mixes = compute_mixes(model, tokenizer, batch, labels, args.mix_ratio)
    console = Console()
    for i, mix in enumerate(mixes):
        console.print(f"[bold]Example {i + 1}[/bold]")
        for line in to_rich(mix, brackets=not console.is_terminal):   # piped: colour is lost, brackets are not
            console.print(line)
        console.print()
    if args.html:
        Path(args.html).write_text(to_html(mixes, f"SSMix on {args.task} (λ0 = {args.mix_ratio}, {args.model})"))
        print(f"wrote {args.html}")
    return 0


# ------------------------------------------------------------------------------------- main


def _subcommands(parser: argparse.ArgumentParser, dest: str):
    return parser.add_subparsers(dest=dest, required=True, metavar="COMMAND",
                                 parser_class=lambda **kw: argparse.ArgumentParser(formatter_class=HelpFormatter, **kw))


def build_parser() -> argparse.ArgumentParser:
    from ssmix.config import default

    parser = argparse.ArgumentParser(prog="ssmix", description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    sub = _subcommands(parser, "command")
    sub.add_parser("tasks", help="list the built-in tasks")
    add_train_arguments(sub.add_parser("train", help="the two-phase fine-tune of one (task, method, seed)"))
    sweep = _subcommands(sub.add_parser("sweep", help="sweeps on Ray Tune with MLflow"), "which")
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
    report = sub.add_parser("report", help="the paper's tables from a sweep's MLflow runs, with seed statistics")
    report.add_argument("experiment", help="the sweep's name (its MLflow experiment)")
    report.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db")
    report.add_argument("--baseline", default="none", help="method the paired differences are taken against")
    report.add_argument("--phase2-only", action="store_true", help="phase 2's own best instead of best over both")
    report.add_argument("--paper", action="store_true", help="show the paper's numbers beside ours")
    report.add_argument("--out", default=None, help="write report.md/.csv/.html and PNG plots here")
    report.add_argument("--no-log", action="store_true", help="do not log the files to the sweep's parent run")
    report.add_argument("--compare", action="append", default=[], metavar="A:B", help="also P(A > B) across tasks "
                        "for two rows (repeatable; every row is compared with the baseline anyway)")
    show = sub.add_parser("show-mix", help="print SSMix examples as the paper's Figure 1 (saliency, spans, λ)")
    show.add_argument("--task", required=True, help="a task of `ssmix tasks`")
    show.add_argument("--model", default="minilm", help="model name or path (its weights give the saliency)")
    show.add_argument("--data-dir", default=None, help="local data <dir>/<dataset>/<split>.jsonl; "
                      "none = $SSMIX_DATA_DIR, else the hub")
    show.add_argument("--n", type=int, default=8, help="number of mixed examples")
    show.add_argument("--mix-ratio", type=float, default=default("mix_ratio"), help="λ0 (default: %(default)s)")
    show.add_argument("--html", default=None, help="also write the examples as an HTML page")
    bench = _subcommands(sub.add_parser("bench", help="benchmarks"), "which")
    from ssmix.bench_args import add_data_arguments, add_step_arguments

    add_step_arguments(bench.add_parser("step", help="time one optimiser step of every method"))
    add_data_arguments(bench.add_parser("padding", help="training examples/s: dynamic padding vs 128"))
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "tasks":
            from ssmix.tasks import describe_tasks

            print(describe_tasks())
            return 0
        if args.command == "train":
            return run_train(args)
        if args.command == "show-mix":
            return run_show_mix(args)
        if args.command == "report":
            return run_report(args)
        if args.command == "sweep":
            return run_sweep_command(args)
        if args.command == "bench":
            from ssmix import bench

            return bench.run_step_benchmark(args) if args.which == "step" else bench.run_padding_benchmark(args)
    except Exception:
        if os.environ.get("SSMIX_DEBUG"):   # the full traceback, for bug reports
            raise
        return _handle_error(sys.exc_info()[1])
    return 0


def _handle_error(error: BaseException) -> int:
    from ssmix.files import Busy
    from ssmix.sweep import SweepError

    try:
        raise error
    except SweepError as err:
        print(f"ssmix: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except pydantic.ValidationError as err:
        return _fail(_pydantic_message(err))
    except Busy as err:
        return _fail(str(err))
    except (ValueError, FileNotFoundError) as err:     # ssmix.data's DataError among them
        return _fail(str(err).splitlines()[0] if str(err) else type(err).__name__)
    except ConnectionError as err:  # an unreachable Ray cluster or tracking server
        return _fail(str(err))
    except OSError as err:  # e.g. a hub model that cannot be fetched offline
        return _fail(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")


if __name__ == "__main__":
    sys.exit(main())
