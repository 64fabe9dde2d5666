"""Slurm, for real on this machine: a cluster of two nodes on loopback (munged, slurmctld, two
slurmd), `sbatch cluster/slurm.sbatch` with a time limit shorter than the sweep and a warning
signal. The first allocation is stopped by the signal and requeues itself; released at once (and
given time), the second finishes the sweep: every cell trained once, one run each, none left
RUNNING, the invocations on the parent run killed then finished."""

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.helpers import BIN, QUESTIONS, write_jsonl
from tests.servers import slurm_binaries, slurm_cluster

REPO = Path(__file__).resolve().parent.parent
WHY_NOT = slurm_binaries()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")]


def job_field(env, job: str, field: str) -> str:
    shown = subprocess.run(["scontrol", "show", "job", job], env=env, capture_output=True, text=True).stdout
    return next((w.split("=", 1)[1] for w in shown.split() if w.startswith(f"{field}=")), "")


def wait_for(check, timeout: float, what: str, log: Path):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(1)
    raise AssertionError(f"{what} not seen in {timeout:.0f} s; job log:\n"
                         + (log.read_text()[-4000:] if log.exists() else "(none)"))


def test_a_sweep_longer_than_its_allocation_requeues_and_finishes_each_cell_once(model_dir, tmp_path):
    work = tmp_path / "shared"            # the "shared filesystem": submit dir, storage and MLflow
    data = work / "data"
    trec = [{"text": q, "coarse_label": c} for q, c in QUESTIONS]
    write_jsonl(data / "trec" / "train.jsonl", trec * 100)       # 1200 rows: phase 2 runs for a while
    write_jsonl(data / "trec" / "test.jsonl", trec[:6])
    (work / "sweep.yaml").write_text(yaml.safe_dump({
        "name": "slurm", "model": model_dir, "tasks": ["trec-coarse"], "methods": ["none", "ssmix"],
        "seeds": [0, 1], "data_dir": str(data), "resources": {"cpu": 1},
        "trial": {"batch_size": 8, "eval_every": 50, "phase1": {"epochs": 1, "lr": 5e-4},
                  "phase2": {"epochs": 4, "lr": 1e-4}}}))
    with slurm_cluster(tmp_path / "slurm") as slurm_env:
        env = dict(slurm_env, PATH=f"{BIN}:{slurm_env['PATH']}", SSMIX_STORAGE_PATH=str(work / "storage"),
                   MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}")
        submitted = subprocess.run(["sbatch", "--parsable", "--nodes=2", "--cpus-per-task=1", "--time=1",
                                    "--signal=B:TERM@50", f"--output={work}/job-%j.out",
                                    str(REPO / "cluster" / "slurm.sbatch"), "sweep.yaml"],
                                   cwd=work, env=env, capture_output=True, text=True, timeout=60)
        assert submitted.returncode == 0, submitted.stderr
        job = submitted.stdout.strip().split(";")[0]
        log = work / f"job-{job}.out"
        wait_for(lambda: "requeued:" in (log.read_text() if log.exists() else ""), 150, "the requeue", log)
        wait_for(lambda: job_field(env, job, "JobState") == "PENDING", 30, "the job pending again", log)
        wait_for(lambda: subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True,
                                        text=True).stdout.split() == ["idle"], 60, "the nodes idle", log)
        time.sleep(2)   # a run of the job started within a second of its requeue finds its credential revoked
        # Slurm holds a requeued job for a while (BeginTime): release it now, with time to finish.
        subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now", "TimeLimit=10"], env=env, check=True)
        wait_for(lambda: job_field(env, job, "JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), 300,
                 "the job's end", log)
        state, restarts, exit_code = (job_field(env, job, f) for f in ("JobState", "Restarts", "ExitCode"))
    out = log.read_text()
    assert (state, exit_code) == ("COMPLETED", "0:0"), out[-4000:]
    assert int(restarts) >= 1 and out.count("Ray has 2 node(s)") == 2
    assert "[sweep] interrupted (SIGTERM)" in out and "done: every cell of sweep.yaml has its result" in out

    # The store: every cell has its result; what the first allocation finished was not retrained.
    cells = sorted((work / "storage" / "slurm" / "cells").glob("*/result.json"))
    assert len(cells) == 4
    for result in cells:
        attempts = (result.parent / "attempts.log").read_text().splitlines()
        kind = json.loads(result.read_text())["cell"]["kind"]
        assert len(attempts) <= 2 and (kind == "phase2" or len(attempts) == 1), (kind, attempts)
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
    first, second = invocations.index("#1 run"), invocations.index("#2 run")
    assert "killed" in invocations[first:second] and "finished" in invocations[second:], invocations
