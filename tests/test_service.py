"""The service's logic without a Ray cluster: the Tune searcher and per-bracket ASHA driven with
Tune's own calls, and whole sweeps through the in-process runner on a real SQLite MLflow store."""

from types import SimpleNamespace

import pytest
import yaml
from mlflow.tracking import MlflowClient
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from ssmix.cli import main
from ssmix.sweep import ResultStore, load_sweep, plan_cells
from ssmix.sweep.invocation import EXIT_INTERRUPTED, Invocation
from ssmix.sweep.local import run_in_process
from ssmix.sweep.plan import Origin, search_cell_pair
from ssmix.sweep.progress import Progress
from ssmix.sweep.schedule import CellQueue, asha_group, cell_costs
from ssmix.tracking import tracker_for
from trainables.tune_parts import CellSearcher, Phase2ASHA


def sweep_file(tmp, model_dir, data_dir, name="service", seeds=(0, 1), **extra):
    sweep = {"name": name, "model": model_dir, "tasks": ["trec-coarse"], "methods": ["none", "ssmix"],
             **({"seeds": list(seeds)} if seeds else {}), "data_dir": str(data_dir), "storage_path": str(tmp / "storage"),
             "tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}", "resources": {"cpu": 1},
             "trial": {"batch_size": 8, "eval_every": 3, "phase1": {"epochs": 1, "lr": 5e-4},
                       "phase2": {"epochs": 1, "lr": 1e-4}}, **extra}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def fake_trial(cell, trial_id):
    return SimpleNamespace(config={"cell": cell.to_dict()}, trial_id=trial_id)


class Feeder:      # a grid sweep's feeder proposes nothing
    def top_up(self):
        pass


def test_searcher_hands_out_each_phase2_once_its_own_phase1_has_a_result(model_dir, data_dir, tmp_path):
    sweep = load_sweep(sweep_file(tmp_path, model_dir, data_dir))
    cells = plan_cells(sweep)
    store = ResultStore(sweep.sweep_dir())
    queue = CellQueue(cells, cell_costs(cells))
    searcher = CellSearcher(queue, store, Progress(len(cells), 0, live=False), Feeder())
    first, second = (searcher.suggest(f"t{i}")["cell"] for i in range(2))
    assert {first["kind"], second["kind"]} == {"phase1"}
    assert searcher.suggest("t2") is None                       # both phase 2s wait: ask again later
    seed0 = first if first["seed"] == 0 else second
    store.write_result(next(c for c in cells if c.id == seed0["id"]), {"status": "finished"})
    searcher.on_trial_complete("t0" if seed0 is first else "t1")
    handed = searcher.suggest("t3")["cell"]
    assert handed["kind"] == "phase2" and handed["phase1_id"] == seed0["id"]
    assert searcher.suggest("t4") is None                       # seed 1's phase 1 is still running
    searcher.on_trial_complete("t1" if seed0 is first else "t0")   # ...and ends without a result
    searcher.on_trial_complete("t3")
    assert searcher.suggest("t5") == Searcher.FINISHED           # seed 1's phase 2 is blocked, nothing left
    assert "failed" in next(iter(queue.blocked.values()))


def test_asha_competes_per_task_and_per_searched_method_and_never_stops_phase1_or_confirmations(
        model_dir, data_dir, tmp_path):
    search = {"algorithm": "grid", "space": {"phase2.lr": {"distribution": "choice", "values": [1e-4, 3e-4]}},
              "confirm_seeds": [1]}
    sweep = load_sweep(sweep_file(tmp_path, model_dir, data_dir, seeds=(), search=search))
    code = "c"
    proposals = [search_cell_pair(sweep, "trec-coarse", "ssmix", {"phase2.lr": lr}, code, i)[1]
                 for i, lr in enumerate((1e-4, 3e-4))]
    phase1 = search_cell_pair(sweep, "trec-coarse", "ssmix", {"phase2.lr": 1e-4}, code, 0)[0]
    grid = plan_cells(load_sweep(sweep_file(tmp_path, model_dir, data_dir, name="grid")))
    grid_phase2 = next(c for c in grid if c.kind == "phase2")
    assert asha_group(proposals[0]) == asha_group(proposals[1]) == ("trec-coarse", "ssmix")
    assert asha_group(grid_phase2) == ("trec-coarse", "")
    assert asha_group(phase1) is None and proposals[0].early_stoppable and not phase1.early_stoppable
    assert asha_group(proposals[0].__class__(**{**proposals[0].__dict__, "origin": Origin.CONFIRM})) is None

    scheduler = Phase2ASHA(grace_period=1, reduction_factor=2)
    trials = {name: fake_trial(cell, name) for name, cell in
              (("good", proposals[0]), ("bad", proposals[1]), ("grid", grid_phase2), ("phase1", phase1))}
    for trial in trials.values():
        scheduler.on_trial_add(None, trial)
    assert set(scheduler.brackets) == {("trec-coarse", "ssmix"), ("trec-coarse", "")}
    assert scheduler.added == {"good", "bad", "grid"}

    def report(name, value):
        return scheduler.on_trial_result(None, trials[name], {"training_iteration": 1, "selection_accuracy": value})

    assert report("good", 0.9) == TrialScheduler.CONTINUE
    assert report("bad", 0.1) == TrialScheduler.STOP            # below the median of its own bracket
    assert report("grid", 0.05) == TrialScheduler.CONTINUE      # alone in the task's grid bracket
    assert report("phase1", 0.0) == TrialScheduler.CONTINUE     # never early-stopped
    for name in trials:                                         # ASHA only hears of the trials it knows
        scheduler.on_trial_complete(None, trials[name], {"training_iteration": 2, "selection_accuracy": 0.5})
    assert scheduler.added == set()
    scheduler.on_trial_remove(None, trials["good"])             # a second end of the same trial: ignored


def test_in_process_sweep_makes_the_mlflow_layout_and_a_rerun_changes_nothing(model_dir, data_dir, tmp_path,
                                                                               capsys):
    path = sweep_file(tmp_path, model_dir, data_dir)
    assert main(["sweep", "run", "--in-process", str(path)]) == 0
    sweep = load_sweep(path)
    client = MlflowClient(sweep.tracking)
    experiment = client.get_experiment_by_name("service").experiment_id

    def runs():
        return {r.info.run_id: r for r in client.search_runs([experiment], max_results=100)}

    first = runs()
    kinds = sorted(r.data.tags.get("ssmix.kind") for r in first.values())
    assert kinds == ["aggregate", "aggregate", "phase1", "phase1", "phase2", "phase2", "summary", "summary", "sweep"]
    # An aggregate run per method: over the one task here, its mean is the summary's mean.
    summaries = {r.data.tags["method"]: r for r in first.values() if r.data.tags["ssmix.kind"] == "summary"}
    for run in (r for r in first.values() if r.data.tags["ssmix.kind"] == "aggregate"):
        method = run.data.tags["method"]
        assert run.data.metrics["n_tasks"] == 1
        assert run.data.metrics["mean_over_tasks"] == pytest.approx(summaries[method].data.metrics["acc_mean"])
        assert ("p_improvement" in run.data.metrics) == (method != "none")
    parent = next(r for r in first.values() if r.data.tags["ssmix.kind"] == "sweep")
    cell_runs = [r for r in first.values() if r.data.tags["ssmix.kind"] in ("phase1", "phase2")]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id and r.info.status == "FINISHED"
               for r in cell_runs)
    assert {r.data.tags["ssmix.cell"] for r in cell_runs} == {c.id for c in plan_cells(sweep)}
    assert all("best_acc_test" in r.data.metrics for r in cell_runs)
    capsys.readouterr()

    assert main(["sweep", "run", "--in-process", str(path)]) == 0
    assert "4 already done, 0 to train" in capsys.readouterr().out
    again = runs()
    assert set(again) == set(first)                             # no new run
    assert all(again[i].data.metrics == first[i].data.metrics for i in first if i != parent.info.run_id)
    log = (tmp_path / "log.md")
    log.write_text(open(client.download_artifacts(parent.info.run_id, "invocations.md")).read())
    assert "#1 run" in log.read_text() and "#2 run" in log.read_text()
    assert log.read_text().count(": finished") == 2 and again[parent.info.run_id].info.status == "FINISHED"


def test_stopped_in_process_sweep_records_killed_and_a_rerun_trains_only_the_rest(model_dir, data_dir, tmp_path):
    from ssmix.cell_training import train_stored_cell

    sweep = load_sweep(sweep_file(tmp_path, model_dir, data_dir))
    store = ResultStore(sweep.sweep_dir())
    trained = []

    def train(cell, report):
        if len(trained) == 2:
            raise KeyboardInterrupt("Ctrl-C")
        trained.append(cell.id)
        train_stored_cell(cell, store, report, {"device": "cpu"})

    invocation = Invocation(sweep, "service.yaml", store, tracker_for(sweep))
    assert run_in_process(invocation, train) == EXIT_INTERRUPTED
    assert invocation.record["status"] == "killed" and invocation.record["counts"]["finished"] == 2
    client = MlflowClient(sweep.tracking)
    experiment = client.get_experiment_by_name("service").experiment_id
    statuses = sorted(r.info.status for r in client.search_runs([experiment], "tags.`ssmix.cell` != ''"))
    assert statuses == ["FINISHED", "FINISHED", "KILLED"]        # the cell it stopped in is not left RUNNING

    again = Invocation(sweep, "service.yaml", store, tracker_for(sweep))
    assert run_in_process(again, lambda cell, report: (trained.append(cell.id),
                                                       train_stored_cell(cell, store, report, {"device": "cpu"}))) == 0
    assert len(trained) == 4 and len(set(trained)) == 4          # each cell trained once over both invocations
    runs = client.search_runs([experiment], "tags.`ssmix.cell` != ''")
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    assert not any("ssmix.interrupted" in r.data.tags for r in runs)   # why it stopped is history now


def test_a_cell_that_stores_its_result_as_the_invocation_stops_is_recorded_finished(model_dir, data_dir, tmp_path):
    """The race a lost Ray makes: the trial writes its result, the driver never hears that it
    finished. Its run must say FINISHED with its figures, not stay RUNNING."""
    from ssmix.cell_training import train_stored_cell

    sweep = load_sweep(sweep_file(tmp_path, model_dir, data_dir, seeds=(0,)))
    store = ResultStore(sweep.sweep_dir())

    def train(cell, report):
        train_stored_cell(cell, store, report, {"device": "cpu"})
        raise KeyboardInterrupt("Ctrl-C")        # after the result is stored, before its finished event

    invocation = Invocation(sweep, "service.yaml", store, tracker_for(sweep))
    assert run_in_process(invocation, train) == EXIT_INTERRUPTED
    assert invocation.record["status"] == "killed" and invocation.record["counts"]["stopped"] == 0
    client = MlflowClient(sweep.tracking)
    experiment = client.get_experiment_by_name("service").experiment_id
    runs = client.search_runs([experiment], "tags.`ssmix.cell` != ''")
    assert [r.info.status for r in runs] == ["FINISHED"]
    stored = store.result(runs[0].data.tags["ssmix.cell"])
    assert runs[0].data.metrics["best_acc_test"] == pytest.approx(100 * stored["best_accuracy"]["test"], abs=1e-3)


def test_a_method_tried_at_several_mix_ratios_gets_its_budget_curve_on_its_summary_runs(model_dir, data_dir,
                                                                                        tmp_path):
    """Dodge et al.'s curve from the stored results of every (ratio, seed) trial, logged with
    step k on the method's summary runs, so that MLflow's chart view draws it."""
    from ssmix.stats import budget_curve
    from ssmix.sweep.results import figure, objective

    path = sweep_file(tmp_path, model_dir, data_dir, seeds=(0, 1), mix_ratios=[0.1, 0.3])
    assert main(["sweep", "run", "--in-process", str(path)]) == 0
    sweep = load_sweep(path)
    store = ResultStore(sweep.sweep_dir())
    trials = [store.finished(c.id) for c in plan_cells(sweep) if c.kind == "phase2"]
    expected = budget_curve([100 * objective(r) for r in trials], [figure(r).value for r in trials])
    client = MlflowClient(sweep.tracking)
    experiment = client.get_experiment_by_name("service").experiment_id
    summaries = client.search_runs([experiment], filter_string="tags.`ssmix.kind` = 'summary' and tags.method = 'ssmix'")
    assert len(summaries) == 2                                  # λ0.1 and λ0.3, each with the method's curve
    for run in summaries:
        assert run.data.metrics["budget_trials"] == 4
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "budget_best_selection"))
        assert [k for k, _ in history] == [1, 2, 3, 4]
        assert [v for _, v in history] == pytest.approx([p.expected_best for p in expected], abs=1e-5)
        reported = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "budget_reported_acc"))
        assert [v for _, v in reported] == pytest.approx([p.expected_reported for p in expected], abs=1e-5)
    baseline = client.search_runs([experiment], filter_string="tags.`ssmix.kind` = 'summary' and tags.method = 'none'")
    assert "budget_trials" not in baseline[0].data.metrics      # one configuration: no curve
