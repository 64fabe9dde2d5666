"""ssmix: SSMix and its baselines for any HuggingFace encoder, and sweeps on Ray Tune with MLflow.

Errors a user can cause (config, data, paths) end in one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pydantic

from ssmix.cli_sweep import add_sweep_commands, run_sweep_command

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
    from ssmix.sweep.spec import default_tracking_uri, shown_uri
    from ssmix.tracking import check_access, log_report_artifacts, read_budget_curves, read_sweep_runs, table2_address

    uri = args.tracking_uri or default_tracking_uri()
    check_access(uri, args.experiment, write=False)
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
            if log_report_artifacts(uri, parent, paths):
                print(f"logged to MLflow run {parent} (artifacts/report/)")
            else:
                print(f"not logged to MLflow: you may read experiment {args.experiment!r} but not log to it (403)")
    link = table2_address(uri, args.experiment, ui_address(shown_uri(uri)))
    if link:
        print(f"Table 2 in MLflow: {link}")
    return 0


def run_show_mix(args) -> int:
    from rich.console import Console
    from transformers.utils import logging as hf_logging

    from ssmix.mixing import check_ratio
    from ssmix.show import compute_mixes, load_examples, to_html, to_rich

    hf_logging.set_verbosity_error()
    check_ratio(args.mix_ratio)
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
    add_sweep_commands(_subcommands(sub.add_parser("sweep", help="sweeps on Ray Tune with MLflow"), "which"))
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
    except (ValueError, FileNotFoundError) as err:     # ssmix.splits' DataError among them
        return _fail(str(err).splitlines()[0] if str(err) else type(err).__name__)
    except ConnectionError as err:  # an unreachable Ray cluster or tracking server
        return _fail(str(err))
    except OSError as err:  # e.g. a hub model that cannot be fetched offline
        return _fail(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")


if __name__ == "__main__":
    sys.exit(main())
