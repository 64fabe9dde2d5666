"""The sweep service end to end on a tiny model: Ray Tune in-process, MLflow on SQLite."""

import textwrap
from pathlib import Path

import pytest

from ssmix.cli import main
from ssmix.sweep import ResultStore, SweepError, load_sweep, plan_cells
from tests.helpers import plant_fault, sweep_file, tiny_trial


def write_sweep(path, model_dir, data_dir, tmp, methods=("none", "ssmix", "embedmix"), phase2_epochs=1, **extra):
    return sweep_file(tmp, model_dir, data_dir, name="tiny", methods=methods, trial=tiny_trial(phase2_epochs),
                      path=path, **extra)


def cell_runs(tmp):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny")
    return client, client.search_runs([experiment.experiment_id], filter_string="tags.`ssmix.cell` != ''")


def check_one_parent_and_summaries(client, cell_runs_, invocations):
    """One parent run that every invocation reattaches to, no run without metrics or children, and a
    summary run per (task, method) whose acc_mean (percent) is the mean of its cell runs."""
    import statistics

    experiment = client.get_experiment_by_name("tiny").experiment_id
    every = client.search_runs([experiment], max_results=1000)
    parents = [r for r in every if r.data.tags.get("ssmix.kind") == "sweep"]
    assert len(parents) == 1 and parents[0].data.tags["ssmix.invocations"] == str(invocations)
    children = {r.data.tags.get("mlflow.parentRunId") for r in every}
    assert all(r.data.metrics or r.info.run_id in children for r in every)
    summaries = {(r.data.tags["task"], r.data.tags["method"]): r for r in every
                 if r.data.tags.get("ssmix.kind") == "summary"}
    assert set(summaries) == {("trec-coarse", m) for m in ("none", "ssmix", "embedmix")}
    for (_, method), summary in summaries.items():
        kind = "phase1" if method == "none" else "phase2"
        values = [r.data.metrics["best_acc_test"] for r in cell_runs_
                  if r.data.tags["ssmix.kind"] == kind and r.data.tags["method"] == method]
        assert summary.data.metrics["acc_mean"] == pytest.approx(statistics.mean(values), abs=1e-6), method
        assert summary.data.metrics["n_seeds"] == len(values)
        assert summary.info.run_name == f"{'ssmix λ0=0.1' if method == 'ssmix' else method} · trec-coarse · summary"
        if method != "none":
            assert "diff_vs_baseline" in summary.data.metrics


def test_plan_shares_phase1_and_hash_is_stable(model_dir, data_dir, tmp_path):
    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", model_dir, data_dir, tmp_path))
    cells = plan_cells(sweep)
    assert [c.kind for c in cells].count("phase1") == 2 and [c.kind for c in cells].count("phase2") == 4
    more = load_sweep(write_sweep(tmp_path / "t.yaml", model_dir, data_dir, tmp_path, seeds=(0, 1, 2)))
    ids = {c.id for c in cells}
    assert ids < {c.id for c in plan_cells(more)}            # adding a seed only adds cells
    assert len({c.id for c in plan_cells(more)} - ids) == 3


def test_phase2_control_adds_a_none_phase2_arm_from_the_shared_phase1(model_dir, data_dir, tmp_path):
    plain = plan_cells(load_sweep(write_sweep(tmp_path / "s.yaml", model_dir, data_dir, tmp_path)))
    path = write_sweep(tmp_path / "c.yaml", model_dir, data_dir, tmp_path, phase2_control=True)
    cells = plan_cells(load_sweep(path))
    added = [c for c in cells if c.id not in {p.id for p in plain}]      # the file's other cells keep their ids
    assert [(c.kind, c.method) for c in added] == [("phase2", "none")] * 2
    phase1 = {c.seed: c.id for c in cells if c.kind == "phase1"}
    assert all(c.phase1_id == phase1[c.seed] for c in added)
    assert {c.run_name for c in added} == {"none (phase 2) · trec-coarse · s0", "none (phase 2) · trec-coarse · s1"}
    assert [c.label for c in added] == [f"trec-coarse none (phase 2) seed {s}" for s in (0, 1)]


@pytest.mark.slow
def test_sweep_runs_each_cell_once_and_reruns_nothing(ray_local, model_dir, data_dir, tmp_path, capsys):
    path = write_sweep(tmp_path / "s.yaml", model_dir, data_dir, tmp_path)
    assert main(["sweep", "run", str(path)]) == 0
    client, runs = cell_runs(tmp_path)
    kinds = sorted(r.data.tags["ssmix.kind"] for r in runs)
    assert kinds == ["phase1"] * 2 + ["phase2"] * 4
    assert all(r.info.status == "FINISHED" for r in runs)
    run = next(r for r in runs if r.data.tags["method"] == "ssmix")
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "acc_test")]
    first = next(r for r in runs if r.data.tags["ssmix.cell"] == run.data.tags["ssmix.phase1_cell"])
    first_steps = [m.step for m in client.get_metric_history(first.info.run_id, "acc_test")]
    assert len(steps) == len(set(steps)) >= 1 and len(first_steps) >= 1   # per evaluation, no step twice
    # A phase-2 run logs phase 2 only, on a step axis that continues its phase 1's.
    assert min(steps) > max(first_steps)
    assert "best_acc_test" in run.data.metrics and "phase2_best_acc_test" in run.data.metrics
    assert run.data.params["method"] == "ssmix" and run.data.params["mix_ratio"] == "0.1"
    assert "phase1.lr" in run.data.params and "data_dir" not in run.data.params
    assert "phase2.lr" not in first.data.params and "mix_ratio" not in first.data.params
    embedmix = next(r for r in runs if r.data.tags["method"] == "embedmix")
    assert "mix_ratio" not in embedmix.data.params and "mix_ratio" not in embedmix.data.tags
    assert "hidden_alpha" in embedmix.data.params
    assert run.info.run_name == f"ssmix λ0=0.1 · trec-coarse · s{run.data.tags['seed']}"
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"trec/train", "trec/test"}
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"trial_config.json", "mix_examples.html"} <= artifacts
    out = capsys.readouterr().out
    assert "trec-coarse" in out and "ssmix" in out and "mlflow ui" in out
    assert "\n6 trials: " in out             # the timing line: each trial's last report says it trained its cell
    # Tune's trial folders are named by the cell (label and id), not by the whole config.
    sweep = load_sweep(path)
    folders = sorted(p.name for p in (Path(sweep.sweep_url) / "tune").glob("*/*") if p.is_dir())
    assert sorted(c.folder_name for c in plan_cells(sweep)) == folders
    assert all(len(name) < 80 and "kind=" not in name for name in folders)

    # Rerun: nothing to train, no new runs.
    assert main(["sweep", "run", str(path)]) == 0
    assert "0 to train" in capsys.readouterr().out
    assert len(cell_runs(tmp_path)[1]) == 6
    check_one_parent_and_summaries(client, runs, invocations=2)

    # Add a seed: only that seed's cells run.
    path = write_sweep(tmp_path / "s.yaml", model_dir, data_dir, tmp_path, seeds=(0, 1, 2))
    assert main(["sweep", "run", "--in-process", str(path)]) == 0         # which cells run: whatever runs them
    out = capsys.readouterr().out
    assert "3 to train" in out and "\n3 trials: " in out
    runs = cell_runs(tmp_path)[1]
    assert len(runs) == 9 and sorted(r.data.tags["seed"] for r in runs).count("2") == 3


def test_invalid_sweep_lists_every_error_and_runs_nothing(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent("""
        name: bad
        tasks: [trec-coarse, imdb]
        methods: [ssmix, cutmix]
        mix_ratios: [0.1, 1.5]
        seeds: [0, one]
        colour: blue
    """))
    assert main(["sweep", "run", str(path)]) == 2
    err = capsys.readouterr().err
    for expected in ("tasks: unknown task(s) ['imdb']", "methods: unknown method(s) ['cutmix']",
                     "mix_ratios: mix ratio(s) [1.5] outside (0, 1]", "seeds.1:", "colour: unknown key",
                     "5 error(s)"):
        assert expected in err
    assert not (tmp_path / "ray_results").exists()


def test_malformed_yaml_names_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ntasks: [sst2\n")
    with pytest.raises(SweepError, match="broken.yaml: line"):
        load_sweep(path)


@pytest.mark.slow
def test_trial_failing_once_is_retried_from_checkpoint_into_same_run(ray_local, model_dir, data_dir, tmp_path,
                                                                    capsys):
    path = write_sweep(tmp_path / "s.yaml", model_dir, data_dir, tmp_path, seeds=(0,), methods=("ssmix",),
                       phase2_epochs=2)
    sweep = load_sweep(path)
    phase2 = next(c for c in plan_cells(sweep) if c.kind == "phase2")
    cell_dir = plant_fault(sweep, phase2)
    assert main(["sweep", "run", str(path)]) == 0
    assert not (cell_dir / "inject-fault").exists()            # the fault did fire
    out = capsys.readouterr().out
    assert out.count(f"started: {phase2.label}") == 2           # started twice by Tune...
    assert "pending -" not in out and "running 2" not in out     # ...but one cell, running once
    client, runs = cell_runs(tmp_path)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    run = next(r for r in runs if r.data.tags["ssmix.kind"] == "phase2")
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "acc_test")]
    # phase 2's evaluations at global steps 3+3 (the fault) and 3+6, each once (phase 1's step 3
    # is on phase 1's run)
    assert sorted(steps) == [6, 9] and len(steps) == 2
    # The retried cell's run carries every artifact of the cell and no stale error.
    assert "mix_examples.html" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "ssmix.error" not in run.data.tags
    result = ResultStore.for_sweep(sweep).result(phase2.id)
    assert [h["phase_step"] for h in result.history("phase2")] == [3, 6]
    assert result.outcome.phase2.resumed_at == [3]             # the retry continued from the checkpoint


@pytest.mark.slow
def test_asha_over_mix_ratios_stops_or_finishes_every_cell_and_reruns_nothing(ray_local, model_dir, data_dir,
                                                                              tmp_path, capsys):
    path = write_sweep(tmp_path / "s.yaml", model_dir, data_dir, tmp_path, seeds=(0,), methods=("ssmix",),
                       phase2_epochs=3, mix_ratios=[0.1, 0.3, 0.5, 0.9], max_concurrent_trials=1,
                       scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2})
    assert main(["sweep", "run", str(path)]) == 0
    sweep = load_sweep(path)
    store = ResultStore.for_sweep(sweep)
    outcomes = [store.result(c.id) for c in plan_cells(sweep) if c.kind == "phase2"]
    assert len(outcomes) == 4 and all(o is not None for o in outcomes)
    stopped = [o for o in outcomes if o.status.value == "stopped"]
    finished = [o for o in outcomes if o.is_finished]
    assert len(stopped) + len(finished) == 4 and finished      # the best ratio always runs to the end
    client, runs = cell_runs(tmp_path)
    states = sorted(r.info.status for r in runs if r.data.tags["ssmix.kind"] == "phase2")
    assert states.count("KILLED") == len(stopped) and states.count("FINISHED") == len(finished)
    capsys.readouterr()
    assert main(["sweep", "run", str(path)]) == 0
    assert "0 to train" in capsys.readouterr().out


def test_mix_ratio_search_space_becomes_fixed_cells(model_dir, data_dir, tmp_path, capsys):
    path = write_sweep(tmp_path / "s.yaml", model_dir, data_dir, tmp_path, seeds=(0,), methods=("ssmix", "embedmix"),
                       mix_ratios={"distribution": "loguniform", "low": 0.05, "high": 0.5, "samples": 5, "seed": 3})
    cells = plan_cells(load_sweep(path))
    ratios = sorted(c.mix_ratio for c in cells if c.method == "ssmix")
    assert len(ratios) == 5 and all(0.05 <= r <= 0.5 for r in ratios)
    assert [c.mix_ratio for c in cells if c.method == "embedmix"] == [None]      # hidden mixup has no λ0
    assert {c.id for c in plan_cells(load_sweep(path))} == {c.id for c in cells}  # same draw every time
    path = write_sweep(tmp_path / "s.yaml", model_dir, data_dir, tmp_path,
                       mix_ratios={"low": 0.5, "high": 0.1, "samples": 2})
    assert main(["sweep", "run", str(path), "--dry-run"]) == 2
    assert "high 0.1 is below low 0.5" in capsys.readouterr().err
