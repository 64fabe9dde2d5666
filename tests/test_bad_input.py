"""Bad sweep input: one clear message naming what is wrong, exit status 2, nothing run or created."""

import json

import pytest

from ssmix.cli import main
from tests import helpers
from tests.servers import free_port


def sweep_file(tmp_path, model_dir, data_dir, **overrides):
    return helpers.sweep_file(tmp_path, model_dir, data_dir, **{"name": "bad", "methods": ("ssmix",), "seeds": (0,),
                                                                "path": tmp_path / "sweep.yaml", **overrides})


def run_bad(path, capsys, *extra):
    code = main(["sweep", "run", str(path), *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("ssmix: error:")
    return err


def nothing_created(tmp_path):
    return not (tmp_path / "storage").exists() and helpers.tracking_store_untouched(tmp_path / "mlflow.db")


@pytest.mark.parametrize("text,expected", [
    ("name: x\ntasks: [trec-coarse\n", "line 3"),
    ("- just\n- a list\n", "expected a mapping"),
    ("name: x\ntasks: [trec-coarse]\nmethods: [ssmix]\nseeds: [1.5]\n", "seeds.0"),
    ("name: x\ntasks: [trec-coarse]\nmethods: [ssmix]\nlearning_rate: 3\n", "learning_rate: unknown key"),
    ("name: x\ntasks: [trec]\nmethods: [ssmix]\n", "unknown task(s) ['trec']; allowed: sst2"),
    ("name: x\ntasks: [sst2]\nmethods: [mixup]\n", "unknown method(s) ['mixup']; allowed: none"),
    ("name: x\ntasks: [sst2]\nmethods: [ssmix]\nmix_ratios: [0]\n", "mix ratio(s) [0.0] outside (0, 1]"),
    ("name: x\ntasks: [sst2]\nmethods: [ssmix]\nseeds: [0, -1]\n", "seeds.1: Input should be greater than or equal to 0"),
    ("name: x\ntasks: [sst2]\nmethods: [ssmix]\nseeds: [4294967296]\n", "seeds.0: Input should be less than"),
    ("name: x\ntasks: [sst2]\nmethods: [tmix]\ntrial: {tmix_layers: [0, 2]}\n", "trial.tmix_layers.0: Input should be"),
    ("name: x\ntasks: [sst2]\nmethods: [ssmix]\nsearch: {algorithm: random, trials: 2, confirm_seeds: [1, -2], "
     "space: {mix_ratio: {distribution: choice, values: [0.1, 0.2]}}}\n",
     "search.confirm_seeds.1: Input should be greater than or equal to 0"),
    ("name: x\ntasks: [sst2]\nmethods: [ssmix]\nsearch: {algorithm: random, trials: 2, trial_seed: -3, "
     "space: {mix_ratio: {distribution: choice, values: [0.1, 0.2]}}}\n",
     "search.trial_seed: Input should be greater than or equal to 0"),
])
@pytest.mark.parametrize("dry_run", [False, True])
def test_malformed_or_invalid_file(tmp_path, capsys, monkeypatch, text, expected, dry_run):
    monkeypatch.chdir(tmp_path)     # the default storage and tracking store would land here
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    assert expected in run_bad(path, capsys, *(["--dry-run"] if dry_run else []))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]


def test_data_dir_without_the_split(model_dir, data_dir, tmp_path, capsys):
    err = run_bad(sweep_file(tmp_path, model_dir, data_dir, tasks=["trec-coarse", "sst2"]), capsys)
    assert "sst2" in err and "split 'train'" in err and "sst2/train.jsonl not found" in err
    assert nothing_created(tmp_path)


def test_data_file_with_a_bad_row(model_dir, tmp_path, capsys):
    data = tmp_path / "data"
    (data / "trec").mkdir(parents=True)
    rows = [{"text": "what is it", "coarse_label": 1, "fine_label": 3}] * 3
    (data / "trec" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rows[1] = {"text": "who", "coarse_label": 9, "fine_label": 3}
    (data / "trec" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    err = run_bad(sweep_file(tmp_path, model_dir, data), capsys)
    assert "test.jsonl: row 2: field 'coarse_label' is 9" in err
    assert nothing_created(tmp_path)


def test_model_path_that_does_not_exist(data_dir, tmp_path, capsys):
    err = run_bad(sweep_file(tmp_path, "./models/nowhere", data_dir), capsys)
    assert "model path './models/nowhere' does not exist" in err
    assert nothing_created(tmp_path)


def test_unreachable_ray_address(model_dir, data_dir, tmp_path, capsys):
    err = run_bad(sweep_file(tmp_path, model_dir, data_dir), capsys, "--address", f"127.0.0.1:{free_port()}")
    assert "Ray cluster at 127.0.0.1:" in err and "unreachable" in err
    assert nothing_created(tmp_path)


def test_unreachable_tracking_uri(model_dir, data_dir, tmp_path, capsys):
    uri = f"http://127.0.0.1:{free_port()}"
    err = run_bad(sweep_file(tmp_path, model_dir, data_dir, tracking_uri=uri), capsys)
    assert f"MLflow tracking server {uri} is unreachable" in err
    assert nothing_created(tmp_path)


def test_dry_run_makes_every_check_a_run_makes(data_dir, tmp_path, capsys):
    err = run_bad(sweep_file(tmp_path, "./models/nowhere", data_dir), capsys, "--dry-run")
    assert "model: model path './models/nowhere' does not exist" in err
    assert nothing_created(tmp_path)


def test_storage_path_that_cannot_be_written_names_the_key(model_dir, data_dir, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    err = run_bad(sweep_file(tmp_path, model_dir, data_dir, storage_path=str(blocker / "results")), capsys)
    assert f"storage_path: {blocker} is a file, not a directory" in err
    assert helpers.tracking_store_untouched(tmp_path / "mlflow.db")


def test_duplicates_in_a_list_get_a_warning(model_dir, data_dir, tmp_path, capsys):
    path = sweep_file(tmp_path, model_dir, data_dir, seeds=[0, 1, 0], methods=["ssmix", "ssmix"])
    assert main(["sweep", "run", str(path), "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "warning:" in captured.err and "seeds lists 0 more than once" in captured.err
    assert "methods lists ssmix more than once" in captured.err
    assert "ready: Ray address, tracking server" in captured.out


@pytest.mark.parametrize("uri,relative", [
    ("sqlite:///mlflow.db", "mlflow.db"), ("./mlruns", "./mlruns"), ("file:mlruns", "mlruns"),
    ("sqlite:////srv/mlflow.db", None), ("/srv/mlruns", None), ("http://127.0.0.1:5000", None),
    ("postgresql://u@db/mlflow", None)])
def test_relative_tracking_files_are_told_apart(uri, relative):
    from ssmix.sweep.preflight import relative_tracking_file

    assert relative_tracking_file(uri) == relative


def test_cluster_run_refuses_relative_storage_and_tracking_files(tmp_path, model_dir, data_dir, capsys, monkeypatch):
    """With a Ray address (a cluster, or inside a Ray job) results must land where the user looks."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SSMIX_STORAGE_PATH", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = sweep_file(tmp_path, model_dir, data_dir, storage_path="./results", tracking_uri=None)
    monkeypatch.setenv("RAY_ADDRESS", "auto")     # what a Ray job's entrypoint sees
    err = run_bad(path, capsys)
    assert "storage_path: './results' is relative" in err
    assert "tracking_uri: 'sqlite:///mlflow.db' is a file relative to the working directory" in err
    assert "MLflow server" in err
    assert not (tmp_path / "results").exists() and not (tmp_path / "mlflow.db").exists()
    # Without an address the same file runs locally (here only checked, with --dry-run).
    monkeypatch.delenv("RAY_ADDRESS")
    assert main(["sweep", "run", str(path), "--dry-run"]) == 0


@pytest.mark.parametrize("flags,expected", [
    (["--seed", "-1"], "--seed: Input should be greater than or equal to 0"),
    (["--phase1-lr", "-1"], "--phase1-lr: Input should be greater than 0"),
    (["--tmix-layers", "0"], "--tmix-layers: Input should be greater than or equal to 1"),
])
def test_train_names_the_flag_and_creates_nothing(tmp_path, capsys, model_dir, data_dir, flags, expected):
    out = tmp_path / "run"
    code = main(["train", "--task", "trec-coarse", "--model", model_dir, "--data-dir", str(data_dir),
                 "--out", str(out), *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"ssmix: error: {expected}"), err
    assert not out.exists()


def test_train_with_a_missing_split_creates_no_run_folder(tmp_path, capsys, model_dir, data_dir):
    out = tmp_path / "run"
    code = main(["train", "--task", "sst2", "--model", model_dir, "--data-dir", str(data_dir), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "sst2/train.jsonl not found" in err, err
    assert not out.exists()
