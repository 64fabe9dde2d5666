"""`ray job submit` against a real Ray head (token auth on) with a real `mlflow server`."""

import subprocess

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.servers import BIN, mlflow_server, ray_head, submit_job

# Slow (real Ray, servers or processes: minutes); one xdist worker runs the cluster tests, in turn,
# beside the one unrelated Ray head they share.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cluster")]


@pytest.mark.usefixtures("beside_unrelated_ray")
def test_sweep_submitted_with_ray_job_submit_lands_on_the_nodes_storage(model_dir, data_dir, tmp_path):
    """As on the compose cluster: the nodes name the shared storage (SSMIX_STORAGE_PATH) and the
    MLflow server (MLFLOW_TRACKING_URI); the sweep file names neither. A sweep file with a relative
    storage_path is refused before anything runs, since the job's working directory is Ray's
    temporary copy. Resubmitting after adding a seed trains only that seed."""
    workdir = tmp_path / "job"
    workdir.mkdir()
    storage = tmp_path / "shared"
    sweep = {"name": "cluster", "model": model_dir, "tasks": ["trec-coarse"], "methods": ["none", "ssmix"],
             "seeds": [0, 1], "data_dir": str(data_dir), "resources": {"cpu": 1},
             "trial": {"batch_size": 8, "eval_every": 3, "phase1": {"epochs": 1, "lr": 5e-4},
                       "phase2": {"epochs": 1, "lr": 1e-4}}}
    with mlflow_server(tmp_path / "mlflow") as tracking_uri, \
            ray_head(tmp_path, node_env={"SSMIX_STORAGE_PATH": str(storage),
                                         "MLFLOW_TRACKING_URI": tracking_uri}) as (dashboard, env, _):
        # Without the token the job API refuses the client.
        refused = subprocess.run([str(BIN / "ray"), "job", "list", "--address", dashboard],
                                 env={k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"},
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0

        (workdir / "sweep.yaml").write_text(yaml.safe_dump(dict(sweep, storage_path="./ray_results")))
        job = submit_job(dashboard, env, workdir, ["ssmix", "sweep", "run", "sweep.yaml"])
        output = job.stdout + job.stderr
        assert job.returncode != 0
        assert "storage_path: './ray_results' is relative" in output, output[-3000:]
        assert "absolute path that every node mounts" in output
        assert "to train" not in output and not storage.exists()

        (workdir / "sweep.yaml").write_text(yaml.safe_dump(sweep))
        job = submit_job(dashboard, env, workdir, ["ssmix", "sweep", "run", "sweep.yaml"])
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        assert "4 cells, 0 already done, 4 to train" in job.stdout + job.stderr
        assert (storage / "cluster").is_dir()

        (workdir / "sweep.yaml").write_text(yaml.safe_dump(dict(sweep, seeds=[0, 1, 2])))
        job = submit_job(dashboard, env, workdir, ["ssmix", "sweep", "run", "sweep.yaml"])
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        assert "6 cells, 4 already done, 2 to train" in job.stdout + job.stderr

        client = MlflowClient(tracking_uri=tracking_uri)
        experiment = client.get_experiment_by_name("cluster")
        runs = client.search_runs([experiment.experiment_id], filter_string="tags.`ssmix.cell` != ''")
        assert sorted(r.data.tags["ssmix.kind"] for r in runs) == ["phase1"] * 3 + ["phase2"] * 3
        assert all(r.info.status == "FINISHED" for r in runs)
        assert all("best_acc_test" in r.data.metrics for r in runs)
        artifacts = [a.path for a in client.list_artifacts(runs[0].info.run_id)]
        assert "trial_config.json" in artifacts
