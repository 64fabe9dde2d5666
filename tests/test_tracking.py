"""Recording a cell in MLflow is one idempotent operation (``SweepTracker.record_cell``)."""

import pytest
from mlflow.tracking import MlflowClient

from ssmix.outcome import FinetuneResult, PhaseResult
from ssmix.sweep import CellResult, load_sweep, plan_cells
from ssmix.sweep.cells import Placement
from ssmix.sweep.storage import PosixStorage
from ssmix.sweep.store import ResultStore
from ssmix.tracking import SweepTracker
from tests.helpers import sweep_file


def evaluation(step, acc):
    return {"phase": "phase2", "global_step": step, "phase_step": step - 3, "epoch": 1.0, "accuracy": {"test": acc},
            "selection": acc, "train_loss": 0.5, "examples_per_sec": 100.0, "is_best": True}


def test_record_cell_completes_a_bare_run_clears_errors_and_changes_nothing_when_repeated(tmp_path, model_dir,
                                                                                          data_dir):
    path = sweep_file(tmp_path, model_dir, data_dir, name="rec", methods=("ssmix",), seeds=(0,))
    cell = next(c for c in plan_cells(load_sweep(path)) if c.kind == "phase2")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = SweepTracker(uri, "rec", description="what it is for")
    parent = tracker.sweep_run()
    assert tracker.sweep_run() == parent                            # one parent, found again
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("rec")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment.tags["mlflow.note.content"] == "what it is for"

    # A run created just before the server went away: tags only, no params, no inputs.
    bare = client.create_run(experiment.experiment_id, tags={"ssmix.cell": cell.id}).info.run_id
    assert tracker.stop_cell_runs({cell.id}, "interrupted (Ctrl-C)") == [cell.id]
    assert client.get_run(bare).info.status == "KILLED"
    assert client.get_run(bare).data.tags["ssmix.interrupted"] == "interrupted (Ctrl-C)"
    assert tracker.start_cell(cell, parent) == bare                   # training again: RUNNING, no stale tag
    assert client.get_run(bare).info.status == "RUNNING" and "ssmix.interrupted" not in client.get_run(bare).data.tags
    assert tracker.record_cell(cell, parent, CellResult.failed("worker died")) is True
    assert client.get_run(bare).info.status == "FAILED"

    store = ResultStore(PosixStorage(tmp_path / "store"))
    store.write_cell_file(cell.id, "mix_examples.html", "<html></html>")
    phase1 = PhaseResult("phase1", "none", 0.8, {"test": 0.8}, best_step=3, steps=3,
                         history=[dict(evaluation(3, 0.8), phase="phase1")])
    phase2 = PhaseResult("phase2", "ssmix", 0.9, {"test": 0.9}, best_step=9, steps=6,
                         history=[evaluation(6, 0.85), evaluation(9, 0.9)])
    result = CellResult.finished(FinetuneResult({}, phase1, phase2, 0.9, {"test": 0.9}, "phase2"),
                                 placement=Placement(hostname="n1", device="cuda", node_ip="10.0.0.2", node_id="n1",
                                                     gpu_ids=["1"]))
    assert tracker.record_cell(cell, parent, result, store) is True
    run = client.get_run(bare)
    assert run.info.status == "FINISHED" and "ssmix.error" not in run.data.tags
    assert run.data.params["method"] == "ssmix" and "data_dir" not in run.data.params
    assert run.data.metrics["best_acc_test"] == 90.0 and run.data.metrics["phase2_best_acc_test"] == 90.0
    assert [m.step for m in client.get_metric_history(bare, "acc_test")] == [6, 9]      # phase 2 only
    assert run.data.tags["ssmix.gpu_ids"] == "1" and run.data.tags["ssmix.device"] == "cuda"
    assert {a.path for a in client.list_artifacts(bare)} == {"trial_config.json", "mix_examples.html"}
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"trec/train", "trec/test"}

    # Again, from another path (a sync, a rerun): nothing changes.
    assert tracker.record_cell(cell, parent, result, store) is False
    assert SweepTracker(uri, "rec").record_cell(cell, parent, result, store) is False
    assert [m.step for m in client.get_metric_history(bare, "acc_test")] == [6, 9]
    assert len(client.search_runs([experiment.experiment_id], max_results=100)) == 2      # the parent and the cell


def test_summary_runs_go_out_with_the_first_finished_cell_then_not_again_within_the_interval_and_whole_at_the_end(
        tmp_path, model_dir, data_dir):
    """Pushing the summary rows after every finished cell doubled two drivers' time in MLflow:
    within ``SUMMARY_SECONDS`` of a push, finished cells only change the rows kept in memory, and
    the invocation's end pushes what changed since, so the runs end with every seed."""
    from ssmix.sweep.recorder import Recorder
    from tests.helpers import finished_result

    cells = plan_cells(load_sweep(sweep_file(tmp_path, model_dir, data_dir, name="throttle", seeds=(0, 1, 2, 3))))
    store = ResultStore(PosixStorage(tmp_path / "store"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    recorder = Recorder(SweepTracker(uri, "throttle"), store)
    recorder.SUMMARY_SECONDS = 3600.0         # the whole loop falls inside one interval, however slow
    recorder.open(cells, [])
    accuracy = {c.id: 0.5 + 0.1 * c.seed + (0.05 if c.kind == "phase2" else 0.0) for c in cells}
    for cell in cells:
        result = finished_result(accuracy[cell.id], phase2=cell.kind == "phase2")
        store.write_result(cell, result)
        recorder.cell_finished(cell, result)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("throttle").experiment_id

    def summaries():
        return {r.data.tags["method"]: r for r in client.search_runs([experiment], "tags.`ssmix.kind` = 'summary'")}

    first = cells[0]
    assert list(summaries()) == [first.method] and summaries()[first.method].data.metrics["n_seeds"] == 1
    assert len(client.search_runs([experiment], "tags.`ssmix.cell` != ''")) == len(cells)   # every cell's run at once

    assert recorder.push_summaries()          # what the invocation's end does
    final = summaries()
    assert set(final) == {"none", "ssmix"}
    for method, run in final.items():
        kind = "phase1" if method == "none" else "phase2"
        figures = [100 * accuracy[c.id] for c in cells if c.kind == kind]
        assert run.data.metrics["n_seeds"] == 4 and run.data.metrics["acc_mean"] == pytest.approx(sum(figures) / 4)
    history = client.get_metric_history(final[first.method].info.run_id, "acc_mean")
    assert len(history) == 2                  # the first cell's push and the end's, nothing between


def test_summary_rows_mlflow_did_not_take_go_out_with_the_next_push(tmp_path, model_dir, data_dir):
    from ssmix.sweep.recorder import Recorder
    from ssmix.sweep.tracker import TrackingUnavailable
    from tests.helpers import finished_result

    class RefusesOnce(SweepTracker):
        refused = False

        def record_summaries(self, parent_run_id, rows):
            if not self.refused:
                self.refused = True
                raise TrackingUnavailable("connection refused")
            super().record_summaries(parent_run_id, rows)

    cells = plan_cells(load_sweep(sweep_file(tmp_path, model_dir, data_dir, name="refused", seeds=(0,))))
    store = ResultStore(PosixStorage(tmp_path / "store"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = RefusesOnce(uri, "refused")
    recorder = Recorder(tracker, store)
    recorder.open(cells, [])
    first, result = cells[0], finished_result(0.8, phase2=cells[0].kind == "phase2")
    store.write_result(first, result)
    recorder.cell_finished(first, result)      # its run is recorded; its summary row is refused
    assert tracker.refused
    assert recorder.push_summaries()           # the end's push: the row MLflow did not take
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("refused").experiment_id
    runs = client.search_runs([experiment], "tags.`ssmix.kind` = 'summary'")
    assert [r.data.tags["method"] for r in runs] == [first.method] and runs[0].data.metrics["n_seeds"] == 1
