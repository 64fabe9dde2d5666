"""`ray job submit` against a real Ray head (token auth on) with a real `mlflow server`."""

import subprocess

import yaml
from mlflow.tracking import MlflowClient

from tests.servers import BIN, mlflow_server, ray_head, submit_job


def test_sweep_submitted_with_ray_job_submit(model_dir, data_dir, tmp_path):
    workdir = tmp_path / "job"
    workdir.mkdir()
    with mlflow_server(tmp_path / "mlflow") as tracking_uri, ray_head(tmp_path) as (dashboard, env, _):
        (workdir / "sweep.yaml").write_text(yaml.safe_dump({
            "name": "cluster", "model": model_dir, "tasks": ["trec-coarse"], "methods": ["none", "ssmix"],
            "seeds": [0, 1], "data_dir": str(data_dir), "storage_path": str(tmp_path / "storage"),
            "tracking_uri": tracking_uri, "resources": {"cpu": 1},
            "trial": {"batch_size": 8, "eval_every": 3, "phase1": {"epochs": 1, "lr": 5e-4},
                      "phase2": {"epochs": 1, "lr": 1e-4}}}))
        # Without the token the job API refuses the client.
        refused = subprocess.run([str(BIN / "ray"), "job", "list", "--address", dashboard],
                                 env={k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"},
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0
        job = submit_job(dashboard, env, workdir, ["ssmix", "sweep", "run", "sweep.yaml"])
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        assert "succeeded" in (job.stdout + job.stderr).lower()
        client = MlflowClient(tracking_uri=tracking_uri)
        experiment = client.get_experiment_by_name("cluster")
        runs = client.search_runs([experiment.experiment_id], filter_string="tags.`ssmix.cell` != ''")
        assert sorted(r.data.tags["ssmix.kind"] for r in runs) == ["phase1", "phase1", "phase2", "phase2"]
        assert all(r.info.status == "FINISHED" for r in runs)
        assert all("best_selection_accuracy" in r.data.metrics for r in runs)
        artifacts = [a.path for a in client.list_artifacts(runs[0].info.run_id)]
        assert "trial_config.json" in artifacts
