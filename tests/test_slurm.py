"""Slurm, for real on this machine: a cluster of two nodes on loopback (munged, slurmctld, two
slurmd) and `sbatch cluster/slurm.sbatch`. The job's batch shell gets SIGTERM, as a time limit's
warning (`--signal=B:TERM`) or a preempting scheduler sends it, at three moments of three
allocations: before Ray is up, while the driver starts (before its own handler), and mid
training. Each time the job stops and requeues itself; released, the fourth allocation finishes
the sweep: every cell trained once, none trained again after its result existed, one run each,
none left RUNNING, the invocations on the parent run killed then finished."""

import subprocess
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from ssmix.sweep import ResultStore, load_sweep, plan_cells
from ssmix.sweep.storage import open_storage
from tests.helpers import BIN, QUESTIONS, write_jsonl
from tests.servers import slurm_binaries, slurm_cluster

REPO = Path(__file__).resolve().parent.parent
WHY_NOT = slurm_binaries()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")]
# (what is happening, the job log's line that says it has begun): when the signal is sent
MOMENTS = [("Ray starting", "Ray head at"), ("the driver starting", "driver started"),
           ("cells training", "[sweep] finished:")]


def job_field(env, job: str, field: str) -> str:
    shown = subprocess.run(["scontrol", "show", "job", job], env=env, capture_output=True, text=True).stdout
    return next((w.split("=", 1)[1] for w in shown.split() if w.startswith(f"{field}=")), "")


def wait_for(check, timeout: float, what: str, log: Path):
    """Until ``check()`` holds; the timeout only bounds a hang, it is no part of the test."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} not seen in {timeout:.0f} s; job log:\n"
                         + (log.read_text()[-4000:] if log.exists() else "(none)"))


def allocation(log: Path, run: int) -> str:
    """What the job's ``run``-th allocation wrote to the (appended) log so far."""
    text = log.read_text() if log.exists() else ""
    marker = f"run {run} of it"
    return text[text.index(marker):] if marker in text else ""


def test_a_sweep_stopped_at_any_moment_of_its_allocations_requeues_and_finishes_each_cell_once(model_dir, tmp_path):
    work = tmp_path / "shared"            # the "shared filesystem": submit dir, storage and MLflow
    data = work / "data"
    trec = [{"text": q, "coarse_label": c} for q, c in QUESTIONS]
    write_jsonl(data / "trec" / "train.jsonl", trec * 10)
    write_jsonl(data / "trec" / "test.jsonl", trec[:6])
    (work / "sweep.yaml").write_text(yaml.safe_dump({
        "name": "slurm", "model": model_dir, "tasks": ["trec-coarse"], "methods": ["none", "ssmix"],
        "seeds": [0, 1], "data_dir": str(data), "resources": {"cpu": 1},
        "trial": {"batch_size": 8, "eval_every": 5, "phase1": {"epochs": 1, "lr": 5e-4},
                  "phase2": {"epochs": 2, "lr": 1e-4}}}))
    with slurm_cluster(tmp_path / "slurm") as slurm_env:
        env = dict(slurm_env, PATH=f"{BIN}:{slurm_env['PATH']}", SSMIX_STORAGE_PATH=str(work / "storage"),
                   MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}")
        submitted = subprocess.run(["sbatch", "--parsable", "--nodes=2", "--cpus-per-task=1", "--time=15",
                                    f"--output={work}/job-%j.out", str(REPO / "cluster" / "slurm.sbatch"),
                                    "sweep.yaml"], cwd=work, env=env, capture_output=True, text=True, timeout=60)
        assert submitted.returncode == 0, submitted.stderr
        job = submitted.stdout.strip().split(";")[0]
        log = work / f"job-{job}.out"
        for run, (what, line) in enumerate(MOMENTS):
            wait_for(lambda line=line, run=run: line in allocation(log, run), 240, f"run {run}: {what}", log)
            # What `--signal=B:TERM` sends: SIGTERM to the batch shell alone.
            subprocess.run(["scancel", "--batch", "--signal=TERM", job], env=env, check=True)
            wait_for(lambda run=run: "requeued:" in allocation(log, run), 120, f"run {run}: the requeue", log)
            wait_for(lambda: job_field(env, job, "JobState") == "PENDING", 60, "the job pending again", log)
            wait_for(lambda: subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True,
                                            text=True).stdout.split() == ["idle"], 60, "the nodes idle", log)
            # Slurm revokes a requeued job's credential with a one-second resolution: a run started
            # within the same second as its requeue finds it revoked.
            time.sleep(2)
            # Slurm holds a requeued job for a while (BeginTime): release it now.
            subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], env=env, check=True)
        wait_for(lambda: job_field(env, job, "JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), 300,
                 "the job's end", log)
        state, restarts, exit_code = (job_field(env, job, f) for f in ("JobState", "Restarts", "ExitCode"))
    out = log.read_text()
    assert (state, exit_code) == ("COMPLETED", "0:0"), out[-4000:]
    assert int(restarts) == 3 and out.count("requeued:") == 3, out[-4000:]
    assert "[sweep] interrupted (SIGTERM)" in allocation(log, 2) and "done: every cell of sweep.yaml" in out

    # The store: every cell has its result, and no cell was trained again once its result existed
    # (every attempt began before its result was stored).
    sweep = load_sweep(work / "sweep.yaml")
    store = ResultStore(open_storage(str(work / "storage" / "slurm")))
    cells = plan_cells(sweep)
    assert len(cells) == 4 and all(store.finished(c.id) for c in cells)
    for cell in cells:
        result = store.finished(cell.id)
        attempts = [float(line.split()[0])
                    for line in store.attempts(cell.id)]
        assert attempts and all(a <= result.timing.started_at + 1e-3 for a in attempts), (cell.label, attempts)
        assert result.timing.started_at == pytest.approx(attempts[-1], abs=1e-3)     # the last attempt stored it
    # MLflow: one run per cell, all FINISHED, nothing RUNNING; the parent run tells both allocations.
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("slurm").experiment_id
    runs = client.search_runs([experiment], max_results=100)
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    cell_runs = [r for r in runs if r.data.tags.get("ssmix.cell")]
    assert len(cell_runs) == len({r.data.tags["ssmix.cell"] for r in cell_runs}) == 4
    assert all(r.info.status == "FINISHED" for r in cell_runs)
    (parent,) = [r for r in runs if r.data.tags.get("ssmix.kind") == "sweep"]
    invocations = Path(client.download_artifacts(parent.info.run_id, "invocations.md", str(tmp_path))).read_text()
    lines = [line for line in invocations.splitlines() if line.startswith("- #")]
    assert [line.split(": ")[-1].split(" ")[0] for line in lines][-1] == "finished", invocations
    assert all(": killed" in line for line in lines[:-1]), invocations
