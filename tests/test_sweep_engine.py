"""The sweep engine at cluster scale: dependency scheduling, storage retention, cell ids that see
the training code, and the three defects found on whole sweeps (custom tasks with mixup,
relative task files beside data_dir, a trial block that overrides one setting alone)."""

import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ssmix.cli import main
from ssmix.sweep import ResultStore, load_sweep, plan_cells
from ssmix.sweep.plan import PACKAGE_DIR, code_digest
from ssmix.sweep.schedule import CellQueue, cell_costs, simulate
from ssmix.tracking import read_sweep_runs
from tests import helpers
from tests.helpers import PAIRS, plant_fault

REPO = Path(__file__).resolve().parent.parent
sweep_file = functools.partial(helpers.sweep_file, name="engine", seeds=(0,))


def files_under(path: Path, pattern: str) -> list[Path]:
    return sorted(path.rglob(pattern))


# ------------------------------------------------------------------------------- scheduling


@pytest.mark.slow
def test_short_task_phase2_starts_before_the_long_tasks_phase1_ends(ray_local, model_dir, data_dir, tmp_path):
    """Two tasks: RTE's phase 1 is held mid training until TREC's phase-2 cells have started (or a
    hang's bound has passed). With the old stage barrier no phase 2 could start before RTE's phase
    1 ended."""
    # One CPU per cell on Ray's two: beside RTE's held phase 1, TREC's cells run one after another.
    path = sweep_file(tmp_path, model_dir, data_dir, tasks=["rte", "trec-coarse"], methods=["ssmix", "embedmix"])
    sweep = load_sweep(path)
    cells = plan_cells(sweep)
    rte_phase1 = next(c for c in cells if c.task == "rte" and c.kind == "phase1")
    trec_phase2 = [c for c in cells if c.task == "trec-coarse" and c.kind == "phase2"]
    assert len(trec_phase2) == 2
    helpers.hold_until_started(sweep, [rte_phase1], trec_phase2)
    assert main(["sweep", "run", str(path)]) == 0
    store = ResultStore.for_sweep(sweep)
    timing = {c.id: store.result(c.id).timing for c in cells}
    assert max(timing[c.id].started_at for c in trec_phase2) < timing[rte_phase1.id].finished_at
    # and every RTE phase 2 waited for its own phase 1
    for cell in cells:
        if cell.task == "rte" and cell.kind == "phase2":
            assert timing[cell.id].started_at >= timing[rte_phase1.id].finished_at


def test_queue_releases_phase2_when_its_phase1_ends_and_blocks_it_when_phase1_fails(model_dir, data_dir, tmp_path):
    path = sweep_file(tmp_path, model_dir, data_dir, seeds=[0, 1], methods=["ssmix", "embedmix"])
    cells = plan_cells(load_sweep(path))
    queue = CellQueue(cells, cell_costs(cells))
    first, second = queue.pop(), queue.pop()
    assert {first.kind, second.kind} == {"phase1"}
    assert queue.pop() is None and not queue.finished        # phase 2 waits for phase 1
    queue.complete(first.id, ok=True)
    released = [queue.pop(), queue.pop()]
    assert {c.phase1_id for c in released} == {first.id} and queue.pop() is None
    blocked = queue.complete(second.id, ok=False, reason="RuntimeError: boom")
    assert {c.phase1_id for c in blocked} == {second.id} and len(blocked) == 2
    assert all("failed: RuntimeError: boom" in queue.blocked[c.id] for c in blocked)
    for cell in released:
        queue.complete(cell.id, ok=True)
    assert queue.finished



def test_queue_passes_over_cells_another_driver_holds_and_gives_the_best_when_all_are_held(model_dir, data_dir,
                                                                                            tmp_path):
    cells = plan_cells(load_sweep(sweep_file(tmp_path, model_dir, data_dir, seeds=[0, 1, 2], methods=["ssmix"])))
    alone = CellQueue(cells, cell_costs(cells))
    order = [alone.pop() for _ in range(3)]                 # the three phase-1 cells, best first
    queue = CellQueue(cells, cell_costs(cells))
    asked = []

    def held(cell):
        asked.append(cell.id)
        return cell.id != order[2].id
    assert queue.pop(elsewhere=held) == order[2]            # the first ready cell nobody holds
    assert asked == [order[0].id, order[1].id, order[2].id]
    assert queue.pop(elsewhere=lambda cell: True) == order[0]    # all held: the best (its trial waits)


def test_failed_phase1_blocks_only_its_phase2_cells(model_dir, data_dir, tmp_path, capsys):
    path = sweep_file(tmp_path, model_dir, data_dir, seeds=[0, 1], max_failures=0)
    sweep = load_sweep(path)
    cells = plan_cells(sweep)
    doomed = next(c for c in cells if c.kind == "phase1" and c.seed == 1)
    store = ResultStore.for_sweep(sweep)
    plant_fault(sweep, doomed)
    assert main(["sweep", "run", "--in-process", str(path)]) == 1
    out = capsys.readouterr().out
    for cell in cells:
        if cell.seed == 0:
            assert store.finished(cell.id) is not None, cell.label        # everything else ran
        else:
            assert store.done(cell.id) is None, cell.label
    assert "injected fault" in store.result(doomed.id).reason            # its failure is kept beside it
    assert "blocked (its phase 1 (trec-coarse seed 1 phase 1) failed" in out
    assert "injected fault" in out


def test_table2_schedule_on_8_and_64_workers(capsys):
    for workers in (8, 64):
        sweep = load_sweep(REPO / "sweeps" / "table2.yaml")
        cells = plan_cells(sweep)
        costs = cell_costs(cells)
        ours, barrier = simulate(cells, costs, workers), simulate(cells, costs, workers, order="barrier")
        first_column = min(ours.columns(cells).values())
        assert first_column <= 0.05 * ours.makespan
        assert ours.makespan <= 1.03 * barrier.makespan
        for cell in cells:                                      # dependencies hold in the simulation
            if cell.kind == "phase2":
                assert ours.start[cell.id] >= ours.end[cell.phase1_id]
        assert main(["sweep", "plan", str(REPO / "sweeps" / "table2.yaml"), "--workers", str(workers)]) == 0
        out = capsys.readouterr().out
        assert f"315 cells on {workers} equal workers" in out and "stage barrier" in out and "lower bound" in out


# ------------------------------------------------------------------------------------ storage


@pytest.mark.slow
def test_storage_keeps_results_and_phase1_weights_only_and_gc_frees_them(ray_local, model_dir, data_dir,
                                                                         tmp_path, capsys):
    path = sweep_file(tmp_path, model_dir, data_dir)
    assert main(["sweep", "run", str(path)]) == 0
    sweep = load_sweep(path)
    store = ResultStore.for_sweep(sweep)
    cells = plan_cells(sweep)
    phase1 = next(c for c in cells if c.kind == "phase1")
    phase2 = next(c for c in cells if c.kind == "phase2")
    root = Path(store.url)
    assert files_under(root, "state.pt") == []                             # no resume state after the end
    assert files_under(root / "tune", "checkpoint_*") == []                # Tune keeps no model copies
    assert store.has_weights(phase1.id)                                    # phase 2 may still need them
    assert not store.storage.exists(store.key(phase2.id, "work/phase2/best"))
    assert store.result(phase2.id).history("phase2")                       # metric history kept
    capsys.readouterr()
    assert main(["sweep", "status", str(path)]) == 0
    status = capsys.readouterr().out
    assert re.search(r"on storage: \d+\.\d [kMG]B in all", status)
    assert re.search(rf"{phase1.id}  finished +\d+\.\d [kM]B", status)      # bytes per cell

    # gc: no phase 2 of the file waits for phase 1's weights any more, so they go; results stay.
    before, weights = store.total_bytes(), store.storage.size(store.key(phase1.id, "work/phase1/best"))
    assert main(["sweep", "gc", str(path)]) == 0
    assert not store.has_weights(phase1.id)
    assert not any((root / "tune").iterdir())
    assert store.finished(phase1.id) and store.finished(phase2.id)
    assert store.total_bytes() <= before - weights

    # A new method needs phase 1's weights again: phase 1 is retrained (to the same result), once.
    before = store.result(phase1.id)
    path = sweep_file(tmp_path, model_dir, data_dir, methods=["none", "ssmix", "embedmix"])
    assert main(["sweep", "run", "--in-process", str(path)]) == 0         # whichever runner trains it
    assert "2 to train" in capsys.readouterr().out                         # phase 1 again + embedmix
    after = store.result(phase1.id)
    assert after.outcome.phase1.best_accuracy == before.outcome.phase1.best_accuracy
    assert len(store.attempts(phase2.id)) == 1


def test_runs_of_cells_no_longer_planned_are_left_out_of_the_report_and_gc_archives_them(
        model_dir, data_dir, tmp_path, capsys):
    # A phase-2 lr changed in the file: its cells are new, the old ones' runs stay in MLflow. Two
    # runs of one seed must not meet in one table cell.
    trial = {"batch_size": 8, "eval_every": 3, "phase1": {"epochs": 1, "lr": 5e-4}, "phase2": {"epochs": 1, "lr": 1e-4}}
    path = sweep_file(tmp_path, model_dir, data_dir, trial=trial)
    assert main(["sweep", "run", "--in-process", str(path)]) == 0
    old = {c.id for c in plan_cells(load_sweep(path)) if c.kind == "phase2"}
    path = sweep_file(tmp_path, model_dir, data_dir, trial={**trial, "phase2": {"epochs": 1, "lr": 3e-5}})
    capsys.readouterr()
    assert main(["sweep", "run", "--in-process", str(path)]) == 0
    assert "1 MLflow run(s) belong to cells this file no longer plans" in capsys.readouterr().out
    sweep = load_sweep(path)
    client = MlflowClient(sweep.tracking)
    experiment = client.get_experiment_by_name("engine").experiment_id
    runs = client.search_runs([experiment], filter_string="tags.`ssmix.cell` != ''")
    assert {r.data.tags["ssmix.cell"] for r in runs if "ssmix.superseded" in r.data.tags} == old

    assert main(["report", "engine", "--tracking-uri", sweep.tracking]) == 0
    report = capsys.readouterr().out
    assert "Left out: 1 run(s) of cells the sweep file no longer plans" in report
    records, _, _, superseded = read_sweep_runs(sweep.tracking, "engine")
    assert superseded == 1 and len([r for r in records if r.row.method == "ssmix"]) == 1   # the new run only

    assert main(["sweep", "gc", str(path)]) == 0
    assert "archived 1 MLflow run(s)" in capsys.readouterr().out
    left = client.search_runs([experiment], filter_string="tags.`ssmix.cell` != ''")
    assert not {r.data.tags["ssmix.cell"] for r in left} & old
    assert main(["report", "engine", "--tracking-uri", sweep.tracking]) == 0
    assert "Left out" not in capsys.readouterr().out


def test_keep_best_model_keeps_phase2_weights_and_the_phase2_control_trains(model_dir, data_dir, tmp_path):
    path = sweep_file(tmp_path, model_dir, data_dir, methods=["embedmix"], keep_best_model=True, phase2_control=True)
    assert main(["sweep", "run", "--in-process", str(path)]) == 0
    sweep = load_sweep(path)
    store = ResultStore.for_sweep(sweep)
    phase2 = {c.method: c for c in plan_cells(sweep) if c.kind == "phase2"}
    assert store.has_weights(phase2["embedmix"].id, "phase2")
    assert files_under(Path(store.url), "state.pt") == []
    control = store.finished(phase2["none"].id)          # phase 2 without mixup, from the same phase 1
    assert control.outcome.phase2.method == "none" and control.history("phase2")
    records, _, _, _ = read_sweep_runs(sweep.tracking, "engine")
    assert {(r.kind, r.row.name) for r in records} == {("phase1", "none"), ("phase2", "none (phase 2)"),
                                                       ("phase2", "embedmix")}


# ------------------------------------------------------------------------------------ cell ids


def test_editing_a_training_module_changes_every_cell_id_and_the_report_none(model_dir, data_dir, tmp_path):
    copy = tmp_path / "ssmix"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    sweep = load_sweep(sweep_file(tmp_path, model_dir, data_dir, seeds=[0, 1], methods=["none", "ssmix", "tmix"]))
    ids = [c.id for c in plan_cells(sweep, code=code_digest(copy))]
    assert ids == [c.id for c in plan_cells(sweep)]                 # the copy is the installed code

    (copy / "report" / "table.py").write_text((copy / "report" / "table.py").read_text() + "\n# a report change\n")
    (copy / "cli.py").write_text((copy / "cli.py").read_text() + "\n# a CLI change\n")
    assert [c.id for c in plan_cells(sweep, code=code_digest(copy))] == ids

    (copy / "step.py").write_text((copy / "step.py").read_text() + "\n# a training change\n")
    changed = [c.id for c in plan_cells(sweep, code=code_digest(copy))]
    assert len(changed) == len(ids) and not set(changed) & set(ids)


def test_loading_and_planning_a_sweep_imports_no_torch():
    code = ("import sys; from ssmix.sweep import load_sweep, plan_cells; "
            "from ssmix.sweep.schedule import cell_costs; "
            f"cells = plan_cells(load_sweep({str(REPO / 'sweeps' / 'table2.yaml')!r})); cell_costs(cells); "
            "assert 'torch' not in sys.modules, 'torch imported'; print(len(cells))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "315"



def test_the_sweep_package_reaches_neither_mlflow_torch_ray_nor_tracking():
    """Every module of ssmix.sweep imported, and a grid plus a search planned and summarised: none
    of them pulls in mlflow, torch, ray or ssmix.tracking, even lazily."""
    modules = sorted(p.stem for p in (REPO / "ssmix" / "sweep").glob("*.py") if p.stem != "__init__")
    code = ("import importlib, sys\n"
            f"for name in {modules!r}: importlib.import_module('ssmix.sweep.' + name)\n"
            "from ssmix.sweep import load_sweep, plan_cells, ResultStore\n"
            "from ssmix.sweep.summary import describe_plan, describe_best\n"
            f"sweep = load_sweep({str(REPO / 'sweeps' / 'table2.yaml')!r}); describe_plan(sweep)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'torch', 'ray') "
            "or m.startswith('ssmix.tracking'))\n"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------- one config, every setting


def test_trial_block_overrides_one_setting_alone_and_reaches_every_setting(model_dir, data_dir, tmp_path):
    path = sweep_file(tmp_path, model_dir, data_dir,
                      trial={"phase1": {"epochs": 1}, "pad_to": 64, "device": "cpu", "tmix_layers": [1],
                             "phase2": {"weight_decay": 0.01, "warmup_ratio": 0.0}})
    trial = plan_cells(load_sweep(path))[0].trial
    assert trial["phase1"] == {**trial["phase1"], "epochs": 1, "lr": 5e-5}   # lr keeps phase 1's default
    assert trial["phase2"]["lr"] == 1e-5 and trial["phase2"]["weight_decay"] == 0.01
    assert trial["pad_to"] == 64 and trial["device"] == "cpu" and trial["tmix_layers"] == [1]


def test_every_trial_setting_is_a_train_flag_with_help_and_default(capsys):
    from ssmix.config import PhaseConfig, TrialConfig

    try:
        main(["train", "--help"])
    except SystemExit:
        pass
    help_text = " ".join(capsys.readouterr().out.split())
    for name in TrialConfig.model_fields:
        if name in ("phase1", "phase2"):
            for key in PhaseConfig.model_fields:
                assert f"--{name}-{key.replace('_', '-')}" in help_text
        else:
            assert f"--{name.replace('_', '-')}" in help_text
    assert help_text.count("(default:") >= len(TrialConfig.model_fields) + 2 * len(PhaseConfig.model_fields) - 3


def test_custom_task_with_mixup_and_relative_files_beside_data_dir(model_dir, data_dir, tmp_path,
                                                                   monkeypatch):
    """A user's task, relative data_files, data_dir set, a one-key phase override, mixup methods:
    every cell trains (phase 2 used to fail with "unknown task")."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "train.csv").write_text("a,b,y\n" + "".join(f"{a},{b},{y}\n" for a, b, y in PAIRS * 3))
    (tmp_path / "mine" / "dev.csv").write_text("a,b,y\n" + "".join(f"{a},{b},{y}\n" for a, b, y in PAIRS))
    task = {"name": "mypairs", "text_fields": ["a", "b"], "label_field": "y", "num_labels": 2,
            "eval_splits": ["dev"], "data_files": {"train": "mine/train.csv", "dev": "mine/dev.csv"}}
    path = sweep_file(tmp_path, model_dir, data_dir, tasks=["mypairs", "trec-coarse"], custom_tasks=[task],
                      methods=["none", "ssmix", "tmix"],
                      trial={"batch_size": 4, "eval_every": 3, "phase1": {"epochs": 1}})
    assert main(["sweep", "run", "--in-process", str(path)]) == 0
    sweep = load_sweep(path)
    store = ResultStore.for_sweep(sweep)
    mine = [c for c in plan_cells(sweep) if c.task == "mypairs"]
    assert len(mine) == 3 and all(store.finished(c.id) for c in mine)
    ssmix_cell = next(c for c in mine if c.method == "ssmix")
    assert store.read_cell_file(ssmix_cell.id, "mix_examples.html").startswith("<")
    assert store.finished(ssmix_cell.id).accuracy(phase2_only=True)
