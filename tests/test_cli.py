import json

import pytest

from ssmix.cli import main


def test_tasks_lists_every_task_of_the_table_once_with_its_labels(capsys):
    from ssmix.tasks import TASKS

    assert main(["tasks"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()[1:]
    assert [row.split()[0] for row in rows] == list(TASKS)       # every task, in the table's order
    assert len(TASKS) == 11
    for row in rows:
        name, labels = row.split()[:2]
        assert int(labels) == TASKS[name].num_labels


def test_train_writes_summary(model_dir, data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--task", "trec-coarse", "--method", "tmix", "--model", model_dir, "--data-dir",
                 str(data_dir), "--phase1-epochs", "1", "--phase2-epochs", "1", "--batch-size", "8",
                 "--eval-every", "3", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["phase2"]["method"] == "tmix"
    printed = capsys.readouterr().out
    assert "best over both phases" in printed and "phase1 step 3" in printed


@pytest.mark.parametrize("args,message", [
    (["--task", "nope"], "unknown task 'nope'; known tasks:"),
    (["--task", "trec-coarse", "--method", "cutmix"], "unknown method 'cutmix'"),
    (["--task", "trec-coarse", "--mix-ratio", "1.5"], "--mix-ratio: Input should be less than or equal to 1"),
    (["--task", "trec-coarse", "--model", "./no/such/model"], "model path './no/such/model' does not exist"),
    (["--task", "sst2"], "file"),   # the data dir has no sst2
])
def test_bad_input_one_line_nonzero_exit(model_dir, data_dir, tmp_path, capsys, args, message):
    base = ["train", "--model", model_dir, "--data-dir", str(data_dir), "--out", str(tmp_path / "x")]
    code = main(base + args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("ssmix: error:") and message in err
    assert len(err.splitlines()) == 1


def _subparsers(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub, action
                yield from _subparsers(sub)


def test_help_lists_every_subcommand_and_every_flag_shows_its_help_and_default(capsys):
    from ssmix.cli import build_parser

    parser = build_parser()
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    assert "``" not in top                                   # no RST markup in terminal help
    names = [(name, sub) for name, sub, _ in _subparsers(parser)]
    for name in ("tasks", "train", "sweep", "report", "show-mix", "bench"):
        assert f"\n    {name}" in top
    for name, sub in names:
        # What a user reads: the printed help, unwrapped, holds each flag's help and its actual default.
        help_text = " ".join(sub.format_help().split())
        for action in sub._actions:
            if action.option_strings and "-h" not in action.option_strings:
                assert action.help, f"{name} {action.option_strings[0]} has no help"
                assert " ".join(action.help.split()[:3]).split("%")[0] in help_text
                if action.default not in (None, False):
                    shown = " ".join(map(str, action.default)) if isinstance(action.default, (list, tuple)) \
                        else str(action.default)
                    if isinstance(action.default, bool):
                        shown = "on"
                    assert f"(default: {shown})" in help_text, f"{name} {action.option_strings[0]} shows no default"
        assert "``" not in help_text
    sweep_help = dict(names)["sweep"].format_help()
    for name in ("run", "status", "sync", "plan", "best", "gc"):
        assert f"\n    {name}" in sweep_help


@pytest.mark.parametrize("args", [["--help"], ["sweep", "status", "--help"], ["sweep", "plan", "--help"],
                                  ["sweep", "best", "--help"], ["sweep", "plan", "SWEEP"], ["sweep", "status", "SWEEP"],
                                  ["sweep", "power", "SWEEP", "--delta", "1"]])
def test_help_and_planning_commands_import_neither_torch_nor_ray(args, tmp_path, model_dir, data_dir):
    """They need neither: torch alone costs seconds of CPU before anything is printed."""
    import subprocess
    import sys

    import yaml

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"name": "light", "model": model_dir, "tasks": ["trec-coarse"],
                                     "methods": ["none", "ssmix"], "seeds": [0], "data_dir": str(data_dir),
                                     "storage_path": str(tmp_path / "storage")}))
    args = [str(sweep) if a == "SWEEP" else a for a in args]
    code = ("import sys\nfrom ssmix.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "print('IMPORTED', sorted(m for m in ('torch', 'ray', 'mlflow', 'transformers') if m in sys.modules))"
            % (args,))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "IMPORTED []" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
