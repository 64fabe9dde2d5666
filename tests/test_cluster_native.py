"""The compose services' own commands, run natively (no Docker engine here): PostgreSQL, `mlflow
server` on it with a served artifact store, a Ray head with token auth and one extra worker node,
then a small sweep submitted with `ray job submit`, read back through the MLflow API."""

import json
import subprocess

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.servers import BIN, mlflow_server, postgres_bin, postgres_server, ray_head, ray_worker, submit_job

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cluster"), pytest.mark.skipif(postgres_bin() is None,
                                reason="PostgreSQL server binaries (Debian's postgresql) are not installed")]


@pytest.mark.usefixtures("beside_unrelated_ray")
def test_compose_services_natively_run_a_submitted_sweep(model_dir, data_dir, tmp_path):
    workdir = tmp_path / "job"
    workdir.mkdir()
    with postgres_server() as database, mlflow_server(tmp_path / "mlflow", backend_uri=database) as tracking_uri, \
            ray_head(tmp_path, num_cpus=1) as (dashboard, env, gcs), ray_worker(gcs, env, tmp_path, num_cpus=1):
        nodes = subprocess.run([str(BIN / "ray"), "list", "nodes", "--address", gcs, "--format", "json"],
                               env=env, capture_output=True, text=True, timeout=120)
        assert nodes.returncode == 0, nodes.stderr
        assert sum(n["state"] == "ALIVE" for n in json.loads(nodes.stdout)) == 2
        (workdir / "sweep.yaml").write_text(yaml.safe_dump({
            "name": "compose", "model": model_dir, "tasks": ["trec-coarse"], "methods": ["none", "embedmix"],
            "seeds": [0, 1], "data_dir": str(data_dir), "storage_path": str(tmp_path / "shared"),
            "resources": {"cpu": 1},
            "trial": {"batch_size": 8, "eval_every": 3, "phase1": {"epochs": 1, "lr": 5e-4},
                      "phase2": {"epochs": 1, "lr": 1e-4}}}))
        # As in the compose file, the cluster's MLflow comes from MLFLOW_TRACKING_URI, not the sweep file.
        job_env = dict(env, MLFLOW_TRACKING_URI=tracking_uri)
        runtime_env = {"env_vars": {"MLFLOW_TRACKING_URI": tracking_uri, "SSMIX_DEBUG": "1"}}
        job = submit_job(dashboard, job_env, workdir, ["ssmix", "sweep", "run", "sweep.yaml"],
                         extra=["--runtime-env-json", json.dumps(runtime_env)])
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        client = MlflowClient(tracking_uri=tracking_uri)
        runs = client.search_runs([client.get_experiment_by_name("compose").experiment_id],
                                  filter_string="tags.`ssmix.cell` != ''")
        assert sorted(r.data.tags["ssmix.kind"] for r in runs) == ["phase1"] * 2 + ["phase2"] * 2
        assert all(r.info.status == "FINISHED" for r in runs)
        history = client.get_metric_history(runs[0].info.run_id, "acc_test")
        assert history
        # artifacts went through the server to its artifact store
        assert list((tmp_path / "mlflow" / "artifacts").rglob("trial_config.json"))
