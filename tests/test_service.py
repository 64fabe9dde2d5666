"""The service's logic without a Ray cluster: whole sweeps through the in-process runner on a real
SQLite MLflow store."""

import functools

import pytest
from mlflow.tracking import MlflowClient

from ssmix.cli import main
from ssmix.sweep import ResultStore, load_sweep, plan_cells
from ssmix.sweep.cells import Placement
from ssmix.sweep.invocation import EXIT_INTERRUPTED, Invocation
from ssmix.sweep.local import run_in_process
from ssmix.tracking import tracker_for
from tests import helpers

sweep_file = functools.partial(helpers.sweep_file, name="service")
CPU = Placement(hostname="test", device="cpu")


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
    store = ResultStore.for_sweep(sweep)
    trained = []

    def train(cell, report, claimed):
        claimed()
        trained.append(cell.id)
        train_stored_cell(cell, store, report, CPU)
        return True

    def train_two_then_stop(cell, report, claimed):
        if len(trained) == 2:
            claimed()
            raise KeyboardInterrupt("Ctrl-C")
        return train(cell, report, claimed)

    invocation = Invocation(sweep, "service.yaml", store, tracker_for(sweep))
    assert run_in_process(invocation, train_two_then_stop) == EXIT_INTERRUPTED
    assert invocation.record.status == "killed" and invocation.record.counts["finished"] == 2
    client = MlflowClient(sweep.tracking)
    experiment = client.get_experiment_by_name("service").experiment_id
    statuses = sorted(r.info.status for r in client.search_runs([experiment], "tags.`ssmix.cell` != ''"))
    assert statuses == ["FINISHED", "FINISHED", "KILLED"]        # the cell it stopped in is not left RUNNING

    again = Invocation(sweep, "service.yaml", store, tracker_for(sweep))
    assert run_in_process(again, train) == 0
    assert again.record.counts["trained"] == 2
    assert len(trained) == 4 and len(set(trained)) == 4          # each cell trained once over both invocations
    runs = client.search_runs([experiment], "tags.`ssmix.cell` != ''")
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    assert not any("ssmix.interrupted" in r.data.tags for r in runs)   # why it stopped is history now


def test_a_cell_that_stores_its_result_as_the_invocation_stops_is_recorded_finished(model_dir, data_dir, tmp_path):
    """The race a lost Ray makes: the trial writes its result, the driver never hears that it
    finished. Its run must say FINISHED with its figures, not stay RUNNING."""
    from ssmix.cell_training import train_stored_cell

    sweep = load_sweep(sweep_file(tmp_path, model_dir, data_dir, seeds=(0,)))
    store = ResultStore.for_sweep(sweep)

    def train(cell, report, claimed):
        claimed()
        train_stored_cell(cell, store, report, CPU)
        raise KeyboardInterrupt("Ctrl-C")        # after the result is stored, before its finished event

    invocation = Invocation(sweep, "service.yaml", store, tracker_for(sweep))
    assert run_in_process(invocation, train) == EXIT_INTERRUPTED
    assert invocation.record.status == "killed" and invocation.record.counts["stopped"] == 0
    client = MlflowClient(sweep.tracking)
    experiment = client.get_experiment_by_name("service").experiment_id
    runs = client.search_runs([experiment], "tags.`ssmix.cell` != ''")
    assert [r.info.status for r in runs] == ["FINISHED"]
    stored = store.result(runs[0].data.tags["ssmix.cell"])
    assert runs[0].data.metrics["best_acc_test"] == pytest.approx(stored.accuracy()["test"], abs=1e-3)


def test_a_method_tried_at_several_mix_ratios_gets_its_budget_curve_on_its_summary_runs(model_dir, data_dir,
                                                                                        tmp_path):
    """Dodge et al.'s curve from the stored results of every (ratio, seed) trial, logged with
    step k on the method's summary runs, so that MLflow's chart view draws it."""
    from ssmix.stats import budget_curve

    path = sweep_file(tmp_path, model_dir, data_dir, seeds=(0, 1), mix_ratios=[0.1, 0.3])
    assert main(["sweep", "run", "--in-process", str(path)]) == 0
    sweep = load_sweep(path)
    store = ResultStore.for_sweep(sweep)
    trials = [store.finished(c.id) for c in plan_cells(sweep) if c.kind == "phase2"]
    expected = budget_curve([100 * r.objective() for r in trials], [r.figure().value for r in trials])
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


def test_a_driver_trains_around_a_cell_another_driver_holds_then_finds_its_result(model_dir, data_dir, tmp_path):
    """Two drivers of one file: while another process holds the claim of the cell this driver would
    run first, it trains the cells nobody holds instead of waiting; the held cell's result, stored
    by the holder, is taken as it is (not trained, not counted as this driver's)."""
    import threading

    from ssmix.cell_training import train_stored_cell
    from ssmix.sweep.schedule import CellQueue, cell_costs

    sweep = load_sweep(sweep_file(tmp_path, model_dir, data_dir))
    store = ResultStore.for_sweep(sweep)
    cells = plan_cells(sweep)
    first = CellQueue(cells, cell_costs(cells)).pop()        # what a driver alone would train first
    holding, release = threading.Event(), threading.Event()

    def other_driver():
        with store.claim(first.id):
            holding.set()
            release.wait(300)
            train_stored_cell(first, store, lambda evaluation: None, CPU)

    holder = threading.Thread(target=other_driver)
    holder.start()
    assert holding.wait(60)
    trained = []

    def train(cell, report, claimed):
        claimed()
        trained.append(cell.id)
        train_stored_cell(cell, store, report, CPU)
        if len(trained) == 2:            # the cells nobody holds are done: the holder may finish now
            release.set()
            holder.join(300)
        return True

    invocation = Invocation(sweep, "service.yaml", store, tracker_for(sweep))
    try:
        assert run_in_process(invocation, train) == 0
    finally:
        release.set()
        holder.join(300)
    independent = [c.id for c in cells if first.id not in (c.id, c.phase1_id)]
    assert trained[:2] == independent and first.id not in trained     # the other seed's cells first
    assert len(trained) == 3 and invocation.record.counts["trained"] == 3
    assert all(store.finished(c.id) for c in cells) and len(store.attempts(first.id)) == 1
