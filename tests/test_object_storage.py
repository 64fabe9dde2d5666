"""Sweeps on object storage, for real: an S3-compatible server on loopback (moto, behind a proxy
that can answer 503 SlowDown or go away), the sweeps as their users run them (`ssmix sweep run`
processes, the standard AWS environment). Results as on disk, nothing trained twice by two
drivers or after a killed one, nothing lost through outages, MLflow's artifacts in the bucket.
(moto honours If-None-Match but does not make check-and-write atomic: the lease protocol's races
are in tests/test_storage.py, on a disk where exclusive create is atomic.)"""

import functools
import os
import re

import pytest
from mlflow.tracking import MlflowClient

from ssmix.cli import main
from ssmix.sweep import ResultStore, load_sweep, plan_cells
from ssmix.sweep.invocations import Invocations
from ssmix.sweep.storage import open_storage
from tests import helpers
from tests.helpers import drain, read_until, sweep_process
from tests.servers import S3Server, create_user, mlflow_auth_server

pytestmark = pytest.mark.slow
sweep_file = functools.partial(helpers.sweep_file, seeds=(0, 1), trial=helpers.tiny_trial(phase2_epochs=2))


@pytest.fixture(scope="module")
def s3():
    with S3Server() as server:
        server.bucket("sweeps")
        yield server


@pytest.fixture
def aws(s3, monkeypatch):
    """The standard AWS environment of the server, for this process and the sweeps it starts."""
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    return dict(s3.env)


def figures(sweep) -> dict[str, float]:
    store = ResultStore.for_sweep(sweep)
    return {c.id: store.finished(c.id).figure().value for c in plan_cells(sweep)}


def test_a_sweep_on_s3_gives_what_it_gives_on_disk_and_a_rerun_trains_nothing(model_dir, data_dir, tmp_path, aws,
                                                                                capsys):
    on_disk = sweep_file(tmp_path, model_dir, data_dir, name="quick")
    on_s3 = sweep_file(tmp_path / "s3", model_dir, data_dir, name="quick", storage_path="s3://sweeps/team/a")
    assert main(["sweep", "run", "--in-process", str(on_disk)]) == 0
    done = sweep_process(on_s3)                                  # on Ray, as on a cluster
    out = drain(done)
    assert done.returncode == 0, out[-3000:]
    sweep = load_sweep(on_s3)
    assert figures(sweep) == figures(load_sweep(on_disk))         # the same cells, the same results
    assert not (tmp_path / "s3" / "storage").exists() and not list(tmp_path.glob("s3:*"))
    bucket = open_storage("s3://sweeps/team/a/quick")
    assert bucket.children("tune")                              # Tune's trial folders too, in the bucket
    capsys.readouterr()
    assert main(["sweep", "run", "--in-process", str(on_s3)]) == 0
    assert "4 cells, 4 already done, 0 to train" in capsys.readouterr().out
    assert main(["sweep", "status", str(on_s3)]) == 0
    status = capsys.readouterr().out
    assert "storage s3://sweeps/team/a/quick" in status and re.search(r"on storage: \d+\.\d [kMG]B in all", status)
    before = bucket.size()
    assert main(["sweep", "gc", str(on_s3)]) == 0
    assert "removed" in capsys.readouterr().out
    store = ResultStore.for_sweep(sweep)
    phase1 = [c for c in plan_cells(sweep) if c.kind == "phase1"]
    assert bucket.size() < before / 4 and not any(store.has_weights(c.id) for c in phase1)
    assert all(store.finished(c.id) for c in plan_cells(sweep))     # results stay


def test_two_drivers_of_one_file_on_s3_train_every_cell_once(model_dir, data_dir, tmp_path, aws):
    path = sweep_file(tmp_path, model_dir, data_dir, name="twice", storage_path="s3://sweeps/team/b",
                      methods=("none", "ssmix", "embedmix"))
    first, second = sweep_process(path, in_process=True), sweep_process(path, in_process=True)
    outputs = [drain(first), drain(second)]
    assert first.returncode == 0 and second.returncode == 0, outputs[0][-2000:] + outputs[1][-2000:]
    sweep = load_sweep(path)
    store = ResultStore.for_sweep(sweep)
    cells = plan_cells(sweep)
    assert all(store.finished(c.id) for c in cells), outputs[0][-3000:] + outputs[1][-3000:]
    assert {c.label: len(store.attempts(c.id)) for c in cells} == {c.label: 1 for c in cells}
    # Each driver counts the cells it trained, not its peer's: in its invocation record and its timing line.
    records = {r.pid: r for r in Invocations(store.storage).read()}
    trained = [records[p.pid].counts["trained"] for p in (first, second)]
    assert sum(trained) == len(cells), trained
    for out, count in zip(outputs, trained):
        assert (f"\n{count} trials: " in out) if count else ("trials: " not in out), out[-2000:]
    client = MlflowClient(sweep.tracking)
    runs = client.search_runs([client.get_experiment_by_name("twice").experiment_id], "tags.`ssmix.cell` != ''")
    assert sorted(r.data.tags["ssmix.cell"] for r in runs) == sorted(c.id for c in cells)
    assert all(r.info.status == "FINISHED" for r in runs)


def test_a_driver_killed_mid_phase2_resumes_from_its_uploaded_checkpoint_once_its_leases_ran_out(
        model_dir, data_dir, tmp_path, aws, monkeypatch):
    """The driver (in process: the trial runs in it) dies by SIGKILL right after phase 2's first
    checkpoint reached the bucket. Its claim and its invocation are leases that nobody renews: the
    rerun takes them over once they ran out, resumes phase 2 from the uploaded checkpoint, and ends
    with what an uninterrupted sweep gives; one run per cell, none RUNNING."""
    clean = sweep_file(tmp_path / "clean", model_dir, data_dir, name="killed", seeds=(0,))
    path = sweep_file(tmp_path, model_dir, data_dir, name="killed", seeds=(0,), storage_path="s3://sweeps/team/c")
    assert main(["sweep", "run", "--in-process", str(clean)]) == 0
    sweep = load_sweep(path)
    phase2 = next(c for c in plan_cells(sweep) if c.kind == "phase2")
    helpers.plant_fault(sweep, phase2, "kill")
    short = {"SSMIX_LEASE_SECONDS": "3"}
    killed = sweep_process(path, short, in_process=True)
    out = drain(killed)
    assert killed.returncode == -9, out[-3000:]
    store = ResultStore.for_sweep(sweep)
    assert store.done(phase2.id) is None and store.storage.exists(store.key(phase2.id, "work/phase2/state.pt"))

    monkeypatch.setenv("SSMIX_LEASE_SECONDS", short["SSMIX_LEASE_SECONDS"])
    assert main(["sweep", "run", "--in-process", str(path)]) == 0
    reference = ResultStore.for_sweep(load_sweep(clean)).finished(phase2.id)
    result = store.finished(phase2.id)
    assert result.outcome.phase2.resumed_at == [3] and len(store.attempts(phase2.id)) == 2
    assert helpers.timeless(result.history("phase2")) == helpers.timeless(reference.history("phase2"))
    assert result.accuracy() == reference.accuracy()
    client = MlflowClient(sweep.tracking)
    runs = client.search_runs([client.get_experiment_by_name("killed").experiment_id], max_results=100)
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    cell_runs = [r for r in runs if r.data.tags.get("ssmix.cell")]
    assert len(cell_runs) == 2 and all(r.info.status == "FINISHED" for r in cell_runs)
    log = store.storage.read_text("cells/invocations.json")
    assert '"status": "killed"' in log and '"status": "finished"' in log


def test_outages_of_the_store_mid_sweep_lose_nothing_and_say_so_once_each(model_dir, data_dir, tmp_path, aws, s3):
    """While the sweep trains, the store answers 503 SlowDown for a while, then goes away and comes
    back (a restart): every call is retried with backoff, each outage is one line, and the sweep
    ends with every result."""
    path = sweep_file(tmp_path, model_dir, data_dir, name="outages", storage_path="s3://sweeps/team/d")
    process = sweep_process(path, {"SSMIX_STORAGE_RETRY_SECONDS": "300"}, in_process=True)
    try:
        seen = read_until(process, "[sweep] started")
        s3.slow_down(True)
        seen += read_until(process, "did not answer")
        s3.slow_down(False)
        seen += read_until(process, "[sweep] finished")
        s3.down()
        seen += read_until(process, "did not answer")
        s3.up()
        out = "".join(seen) + drain(process)
    finally:                                  # whatever happened, the next test has its store
        s3.slow_down(False)
        if s3._proxy is None:
            s3.up()
    assert process.returncode == 0, out[-3000:]
    outages = [line for line in out.splitlines() if line.startswith("[storage]")]
    assert len(outages) == 2, outages
    # The 503 named by its code where the failed call's response has a body; a HEAD's has none (s3fs: EBUSY).
    assert re.search(r"SlowDown|\[Errno 16\] Service Unavailable", outages[0]), outages
    assert "Could not connect" in outages[1], outages
    sweep = load_sweep(path)
    assert all(ResultStore.for_sweep(sweep).finished(c.id) for c in plan_cells(sweep))


def test_mlflow_keeps_its_artifacts_in_the_bucket(model_dir, data_dir, tmp_path, aws, s3, monkeypatch):
    """The compose file's MLflow server (cluster/mlflow-server.sh) with --artifacts-destination in
    the bucket: a sweep's mix pages and invocation log land there, no volume shared."""
    user = ("ana", "ana-password-123")
    env = dict(aws, MLFLOW_S3_ENDPOINT_URL=s3.url, MLFLOW_ARTIFACTS_DESTINATION="s3://sweeps/mlartifacts")
    with mlflow_auth_server(tmp_path / "mlflow", env=env) as url:
        create_user(url, *user)
        path = sweep_file(tmp_path, model_dir, data_dir, name="artifacts", seeds=(0,), tracking_uri=url)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user[0])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", user[1])
        assert main(["sweep", "run", "--in-process", str(path)]) == 0
    bucket = open_storage("s3://sweeps/mlartifacts")
    names = {os.path.basename(p) for p in bucket.fs.find("sweeps/mlartifacts")}
    assert {"mix_examples.html", "invocations.md", "trial_config.json"} <= names, names
    assert not (tmp_path / "mlflow" / "artifacts").exists()

