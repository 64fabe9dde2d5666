"""Recording a cell in MLflow is one idempotent operation (``SweepTracker.record_cell``)."""

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
