import json

import pytest

from ssmix.cli import main


def test_tasks_lists_all_nine(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for name in ("sst2", "qqp", "mnli", "qnli", "rte", "mrpc", "trec-coarse", "trec-fine", "anli"):
        assert name in out


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
    (["--task", "trec-coarse", "--mix-ratio", "1.5"], "mix_ratio"),
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


def test_help_lists_every_subcommand_and_every_flag_has_help(capsys):
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
        help_text = sub.format_help()
        for action in sub._actions:
            if action.option_strings and "-h" not in action.option_strings:
                assert action.help, f"{name} {action.option_strings[0]} has no help"
                if action.default not in (None, False):
                    formatted = sub._get_formatter()._get_help_string(action)
                    assert "default" in formatted, f"{name} {action.option_strings[0]} shows no default"
        assert "``" not in help_text
    sweep_help = dict(names)["sweep"].format_help()
    for name in ("run", "status", "sync", "plan", "best", "gc"):
        assert f"\n    {name}" in sweep_help
