"""Nothing lost: faults injected for real (processes killed, a server stopped) on a tiny model."""

import json
import os
import signal
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from ssmix.cell_training import FAULT_FILE
from ssmix.cli import main
from ssmix.sweep import ResultStore, load_sweep, plan_cells
from tests.helpers import SECRET, drain, plant_fault, read_until, sweep_file, sweep_process, timeless, tiny_trial
from tests.servers import free_port, mlflow_server

pytestmark = pytest.mark.slow  # real Ray, servers or processes: minutes, not seconds

def write_sweep(tmp, model_dir, data_dir, name="faults", tracking=None, phase2_epochs=2, **extra):
    return sweep_file(tmp, model_dir, data_dir, name=name, trial=tiny_trial(phase2_epochs),
                      **({"tracking_uri": tracking} if tracking else {}), **extra)


def cell_runs(uri, name):
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(name)
    return client, client.search_runs([experiment.experiment_id], filter_string="tags.`ssmix.cell` != ''")


def all_runs(uri, name):
    client = MlflowClient(tracking_uri=uri)
    return client, client.search_runs([client.get_experiment_by_name(name).experiment_id], max_results=1000)


def invocation_log(client, parent):
    path = client.download_artifacts(parent.info.run_id, "invocations.md")
    return Path(path).read_text()


def assert_runs_tell_the_truth(uri, name):
    """No run RUNNING once an invocation has ended, no FINISHED run with an error tag, one parent,
    and every SSMix run carries the cell's mix_examples.html."""
    client, runs = all_runs(uri, name)
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    assert [r.info.run_name for r in runs if r.info.status == "FINISHED"
            and {"ssmix.error", "ssmix.interrupted"} & set(r.data.tags)] == []
    parents = [r for r in runs if r.data.tags.get("ssmix.kind") == "sweep"]
    assert len(parents) == 1
    for run in runs:
        if run.data.tags.get("ssmix.kind") == "phase2" and run.data.tags["method"] == "ssmix":
            assert "mix_examples.html" in {a.path for a in client.list_artifacts(run.info.run_id)}, run.info.run_name
    return client, parents[0]


# 1 ------------------------------------------------------------------------------------------


def test_worker_killed_mid_phase2_resumes_to_the_same_result(ray_local, model_dir, data_dir, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    clean = write_sweep(tmp_path / "a", model_dir, data_dir, seeds=(0,))      # uninterrupted
    killed = write_sweep(tmp_path / "b", model_dir, data_dir, seeds=(0,))     # same sweep, worker killed
    sweep = load_sweep(killed)
    phase2 = next(c for c in plan_cells(sweep) if c.kind == "phase2")
    cell_dir = plant_fault(sweep, phase2, "kill")             # SIGKILL the worker after its first checkpoint
    assert main(["sweep", "run", "--in-process", str(clean)]) == 0   # the same result as on Ray, bit for bit
    assert main(["sweep", "run", str(killed)]) == 0
    assert not (cell_dir / "inject-fault").exists()
    assert len((cell_dir / "attempts.log").read_text().splitlines()) == 2     # killed once, retried once
    a = ResultStore.for_sweep(load_sweep(clean)).result(phase2.id)
    b = ResultStore.for_sweep(sweep).result(phase2.id)
    assert b.outcome.phase2.resumed_at == [3]
    assert timeless(a.history("phase2")) == timeless(b.history("phase2"))
    assert a.accuracy() == b.accuracy()
    client, runs = cell_runs(f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}", "faults")
    run = next(r for r in runs if r.data.tags["ssmix.kind"] == "phase2")
    assert len(runs) == 2 and run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "acc_test")]
    assert sorted(steps) == sorted(set(steps)) == [6, 9]     # phase 2's own evaluations, once each


# 2 ------------------------------------------------------------------------------------------


def test_driver_killed_half_way_finishes_on_rerun_without_retraining(model_dir, data_dir, tmp_path, capsys):
    path = write_sweep(tmp_path, model_dir, data_dir)
    process = sweep_process(path)
    read_until(process, "[sweep] finished")          # at least one cell is done
    os.killpg(process.pid, signal.SIGKILL)            # the driver and the Ray it started
    process.wait(timeout=60)
    sweep = load_sweep(path)
    store = ResultStore.for_sweep(sweep)
    done_before = {c.id for c in plan_cells(sweep) if store.done(c.id) is not None}
    assert done_before and len(done_before) < 4
    # `sweep sync` closes the dead invocation, and the runs of the cells it was training with it.
    assert main(["sweep", "sync", str(path)]) == 0
    _, runs = all_runs(sweep.tracking, "faults")
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    unfinished = [r for r in runs if r.data.tags.get("ssmix.cell") and r.data.tags["ssmix.cell"] not in done_before]
    assert all(r.info.status == "KILLED" and "invocation #1 was killed" in r.data.tags["ssmix.interrupted"]
               for r in unfinished)

    capsys.readouterr()
    assert main(["sweep", "run", "--in-process", str(path)]) == 0   # what a rerun keeps does not depend on its runner
    assert f"{len(done_before)} already done" in capsys.readouterr().out
    for cell in plan_cells(sweep):
        attempts = store.attempts(cell.id)
        if cell.id in done_before:
            assert len(attempts) == 1, cell.label                  # finished cells were not retrained
        assert store.done(cell.id) is not None
    _, runs = cell_runs(sweep.tracking, "faults")
    assert sorted(r.data.tags["ssmix.cell"] for r in runs) == sorted(c.id for c in plan_cells(sweep))
    assert all(r.info.status == "FINISHED" for r in runs)
    client, parent = assert_runs_tell_the_truth(sweep.tracking, "faults")
    # The killed invocation was closed by the rerun; the parent's state is the rerun's.
    assert parent.info.status == "FINISHED" and parent.data.tags["ssmix.invocations"] == "3"
    log = invocation_log(client, parent)
    assert "#1 run" in log and "killed" in log and "#2 sync" in log and "#3 run" in log and "finished" in log


def test_driver_losing_its_ray_fails_the_invocation_at_once_and_a_rerun_finishes_the_same(model_dir, data_dir,
                                                                                           tmp_path):
    from tests.servers import session_processes

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    clean = write_sweep(tmp_path / "a", model_dir, data_dir, seeds=(0,))   # uninterrupted
    path = write_sweep(tmp_path / "b", model_dir, data_dir, seeds=(0,))    # its raylet killed
    assert main(["sweep", "run", "--in-process", str(clean)]) == 0   # the same result as on Ray, bit for bit
    sweep = load_sweep(path)
    store = ResultStore.for_sweep(sweep)
    phase2 = next(c for c in plan_cells(sweep) if c.kind == "phase2")
    plant_fault(sweep, phase2, "hold")        # phase 2 waits after its first checkpoint: killed while it trains
    process = sweep_process(path)
    read_until(process, "[sweep] started: trec-coarse ssmix")
    checkpoint = store.storage.local_path(store.key(phase2.id, "work/phase2/state.pt"))
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline:   # phase 2 has a checkpoint to resume from
        time.sleep(0.05)
    assert checkpoint.exists() and store.done(phase2.id) is None
    raylet = [pid for pid in session_processes(process.pid) if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet"]
    assert len(raylet) == 1
    os.kill(raylet[0], signal.SIGKILL)
    killed_at = time.time()
    out = drain(process, timeout=60)
    assert time.time() - killed_at < 15, out[-3000:]
    assert process.returncode == 4, out[-3000:]
    lines = [line for line in out.splitlines() if line.startswith("[sweep] Ray was lost")]
    assert len(lines) == 1 and "raylet" in lines[0], out[-3000:]
    records = json.loads(store.storage.read_text("cells/invocations.json"))
    assert [r["status"] for r in records] == ["failed"] and "Ray was lost" in records[0]["reason"]
    _, runs = all_runs(sweep.tracking, "faults")
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == [], out[-3000:]
    assert any(r.info.status == "KILLED" and "Ray was lost" in r.data.tags.get("ssmix.interrupted", "") for r in runs)

    # The held trial's worker outlives its raylet (it asks nothing of Ray while held): what is left
    # of the killed driver's processes goes, as a lost node's would, before the rerun.
    for pid in session_processes(process.pid):
        os.kill(pid, signal.SIGKILL)
    store.delete_cell_file(phase2.id, FAULT_FILE)
    assert main(["sweep", "run", "--in-process", str(path)]) == 0    # resumed in process: the same result
    a = ResultStore.for_sweep(load_sweep(clean)).result(phase2.id)
    b = store.result(phase2.id)
    assert b.outcome.phase2.resumed_at == [3]
    assert timeless(a.history("phase2")) == timeless(b.history("phase2"))
    assert a.accuracy() == b.accuracy()
    assert_runs_tell_the_truth(sweep.tracking, "faults")


def stopped_driver(tmp_path, model_dir, data_dir, name, send, in_process=False):
    """A sweep stopped by `send(process)` while its first cell trains. (Rerunning after a stop is
    the SIGKILL test's: the stopped cells train and their runs lose the tags.)"""
    path = write_sweep(tmp_path, model_dir, data_dir, name=name, seeds=(0,))
    process = sweep_process(path, in_process=in_process)
    read_until(process, "[sweep] started")
    send(process)
    out = drain(process, timeout=180)
    sweep = load_sweep(path)
    records = json.loads((Path(sweep.sweep_url) / "cells" / "invocations.json").read_text())
    client, runs = all_runs(sweep.tracking, name)
    return path, process.returncode, out, records, runs


def test_ctrl_c_records_the_invocation_and_its_running_cells_as_killed(model_dir, data_dir, tmp_path):
    # What a terminal's Ctrl-C sends: SIGINT to the whole foreground group.
    path, code, out, records, runs = stopped_driver(tmp_path, model_dir, data_dir, "ctrlc",
                                                    lambda p: os.killpg(p.pid, signal.SIGINT))
    assert code == 130, out[-3000:]
    assert "interrupted (Ctrl-C)" in out and "Run the same command again" in out
    assert [r["status"] for r in records] == ["killed"] and "Ctrl-C" in records[0]["reason"]
    assert records[0]["counts"]["stopped"] >= 1
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    parent = [r for r in runs if r.data.tags.get("ssmix.kind") == "sweep"][0]
    assert parent.info.status == "KILLED"
    killed = [r for r in runs if r.data.tags.get("ssmix.cell") and r.info.status == "KILLED"]
    assert killed and all("Ctrl-C" in r.data.tags["ssmix.interrupted"] for r in killed)


def test_sigterm_as_ray_job_stop_sends_is_recorded_as_killed(model_dir, data_dir, tmp_path):
    """In process here (on Ray, `tests/test_slurm.py` stops a driver with SIGTERM)."""
    _, code, out, records, runs = stopped_driver(tmp_path, model_dir, data_dir, "sigterm",
                                                 lambda p: os.kill(p.pid, signal.SIGTERM), in_process=True)
    assert code == 130, out[-3000:]
    assert [r["status"] for r in records] == ["killed"] and "SIGTERM" in records[0]["reason"]
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []


# 3 ------------------------------------------------------------------------------------------


def test_tracking_server_down_then_gone_for_good_loses_nothing(model_dir, data_dir, tmp_path):
    """First the server stops while cells train and comes back, on the same address, once the
    driver has found it gone (a failed MLflow call): every evaluation of every cell reaches
    MLflow. Then, with one more seed, it stops for good: the driver ends with exit 3 and says
    what to sync; `sweep sync` pushes the missing cells once the server is back."""
    port, root = free_port(), tmp_path / "mlflow"
    backend = f"sqlite:///{root / 'mlflow.db'}"
    server = mlflow_server(root, backend, port)
    uri = server.__enter__()
    up = True
    path = write_sweep(tmp_path, model_dir, data_dir, tracking=uri, phase2_epochs=3, tracking_retry_seconds=180)
    process = sweep_process(path, in_process=True)      # what a sweep records does not depend on its runner
    try:
        read_until(process, "[sweep] started")
        server.__exit__(None, None, None)            # the server goes away mid-sweep...
        up = False
        during = read_until(process, "an MLflow call failed")
        server = mlflow_server(root, backend, port)   # ...and comes back once the driver has noticed
        server.__enter__()
        up = True
        out = "".join(during) + drain(process)
        assert process.returncode == 0, out[-3000:]
        assert "View run" not in out and "View experiment" not in out   # MLflow's links, per call: off
        client, runs = cell_runs(uri, "faults")
        sweep = load_sweep(path)
        store = ResultStore.for_sweep(sweep)
        assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
        for run in runs:
            result = store.result(run.data.tags["ssmix.cell"])
            history = result.history(run.data.tags["ssmix.kind"])       # the run's own phase
            steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "acc_test"))
            assert steps == sorted(h["global_step"] for h in history), run.info.run_name

        path = write_sweep(tmp_path, model_dir, data_dir, tracking=uri, seeds=(0, 1, 2), phase2_epochs=3,
                           tracking_retry_seconds=5)
        process = sweep_process(path, in_process=True)
        read_until(process, "[sweep] started")
    except BaseException:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        raise
    finally:
        if up:
            server.__exit__(None, None, None)        # gone for good
    out = drain(process)
    assert process.returncode == 3, out[-3000:]
    # Only seed 2's two cells are missing from MLflow: the others were recorded before.
    assert "2 cell(s) are trained and stored under" in out and f"ssmix sweep sync {path}" in out
    sweep = load_sweep(path)
    assert all(ResultStore.for_sweep(sweep).result(c.id) for c in plan_cells(sweep))
    with mlflow_server(root, backend, port):
        assert main(["sweep", "sync", str(path)]) == 0
        _, runs = cell_runs(uri, "faults")
        assert len(runs) == 6 and all(r.info.status == "FINISHED" for r in runs)
        assert all("best_acc_test" in r.data.metrics for r in runs)
        client, parent = assert_runs_tell_the_truth(uri, "faults")
        # The exit-3 invocation is closed as failed with its reason and summary; the sync finished.
        log = invocation_log(client, parent)
        assert "#2 run" in log and "failed" in log and "MLflow did not answer" in log
        assert "#3 sync" in log and parent.info.status == "FINISHED"
        assert "summary.md" in {a.path for a in client.list_artifacts(parent.info.run_id)}
        # Syncing again changes nothing.
        before = {r.info.run_id: (r.data.metrics, r.data.tags.get("ssmix.recorded")) for r in runs}
        assert main(["sweep", "sync", str(path)]) == 0
        after = {r.info.run_id: (r.data.metrics, r.data.tags.get("ssmix.recorded")) for r in cell_runs(uri, "faults")[1]}
        assert before == after


# 4 ------------------------------------------------------------------------------------------


def test_diverging_and_raising_trials_fail_visibly_and_others_finish(ray_local, model_dir, data_dir, tmp_path, capsys):
    path = write_sweep(tmp_path, model_dir, data_dir, methods=("none", "ssmix", "embedmix"), max_failures=0)
    sweep = load_sweep(path)
    cells = plan_cells(sweep)
    raising = next(c for c in cells if c.method == "embedmix" and c.seed == 1)
    store = ResultStore.for_sweep(sweep)
    plant_fault(sweep, raising)
    assert main(["sweep", "run", str(path)]) == 1                    # the exit status says cells failed
    out = capsys.readouterr().out
    assert "1 cell(s) failed or have no result" in out and "injected fault" in out
    assert all(store.done(c.id) for c in cells if c.id != raising.id)
    assert "injected fault" in store.result(raising.id).reason
    client, runs = cell_runs(sweep.tracking, "faults")
    failed = [r for r in runs if r.info.status == "FAILED"]
    assert len(failed) == 1 and "injected fault" in failed[0].data.tags["ssmix.error"]

    # A diverging phase 2 (a learning rate that overflows): the loss turns NaN and the trial says so.
    diverge = write_sweep(tmp_path, model_dir, data_dir, name="diverge", seeds=(0,), methods=("ssmix",),
                          max_failures=0)
    config = yaml.safe_load(diverge.read_text())
    config["trial"]["phase2"]["lr"] = 1e30
    diverge.write_text(yaml.safe_dump(config))
    assert main(["sweep", "run", "--in-process", str(diverge)]) == 1      # what a trial says: whatever runs it
    _, runs = cell_runs(load_sweep(diverge).tracking, "diverge")
    failed = [r for r in runs if r.info.status == "FAILED"]
    assert len(failed) == 1 and "training loss is" in failed[0].data.tags["ssmix.error"]
    assert [r.info.status for r in runs if r.data.tags["ssmix.kind"] == "phase1"] == ["FINISHED"]

    # The raising cell failed past max_failures; a rerun trains it, and its run says FINISHED
    # without the old error tag.
    assert main(["sweep", "run", "--in-process", str(path)]) == 0
    _, runs = cell_runs(sweep.tracking, "faults")
    run = next(r for r in runs if r.data.tags["ssmix.cell"] == raising.id)
    assert run.info.status == "FINISHED" and "ssmix.error" not in run.data.tags
    assert_runs_tell_the_truth(sweep.tracking, "faults")


# 5 ------------------------------------------------------------------------------------------


def test_two_sweeps_of_one_file_at_once_train_each_cell_once_and_leak_no_secret(model_dir, data_dir, tmp_path):
    """Two drivers of one file: each cell trains once. Both ran with a secret in their
    environment: it reaches neither their output nor MLflow's params, tags or artifacts."""
    path = write_sweep(tmp_path, model_dir, data_dir)
    # Claims on storage make each cell train once, whatever runs the drivers' cells: in process here.
    first, second = sweep_process(path, in_process=True), sweep_process(path, in_process=True)
    out1, out2 = drain(first), drain(second)
    assert first.returncode == 0, out1[-3000:]
    assert second.returncode == 0, out2[-3000:]
    sweep = load_sweep(path)
    store = ResultStore.for_sweep(sweep)
    for cell in plan_cells(sweep):
        assert len(store.attempts(cell.id)) == 1, cell.label
        json.loads(store.storage.read_text(store.key(cell.id, "result.json")))
    client, runs = cell_runs(sweep.tracking, "faults")
    assert len(runs) == 4 and len({r.data.tags["ssmix.cell"] for r in runs}) == 4

    assert SECRET not in out1 + out2
    everything = client.search_runs([client.get_experiment_by_name("faults").experiment_id])
    assert len(everything) > len(runs)                    # the sweep's parent and summary runs too
    for run in everything:
        assert SECRET not in json.dumps(run.data.params) + json.dumps(run.data.tags)
        for artifact in client.list_artifacts(run.info.run_id):
            if not artifact.is_dir:
                local = client.download_artifacts(run.info.run_id, artifact.path, str(tmp_path / "dl"))
                assert SECRET not in Path(local).read_text(errors="replace")
