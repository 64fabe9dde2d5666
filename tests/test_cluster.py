"""A cluster on loopback, as the compose file builds it but natively (no Docker engine here):
PostgreSQL, `mlflow server` on it with a served artifact store, a Ray head with token auth and a
worker node with two (logical) GPUs; the nodes name the shared storage (SSMIX_STORAGE_PATH) and
the MLflow server (MLFLOW_TRACKING_URI), the sweep file names neither; sweeps go in through
`ray job submit`. One cluster for every check, since starting it is most of the cost."""

import json
import subprocess

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.servers import BIN, mlflow_server, postgres_bin, postgres_server, ray_head, ray_worker, submit_job

# Slow (real Ray, servers or processes: minutes); one xdist worker runs the cluster tests, in turn,
# beside the one unrelated Ray head they share.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cluster")]


def tracking_backend():
    """PostgreSQL as in the compose file where Debian's server is installed (.ci/run installs it),
    else the server's SQLite default: the job path is tested either way."""
    from contextlib import nullcontext

    return postgres_server() if postgres_bin() is not None else nullcontext(None)


def alive_nodes(gcs: str, env: dict) -> list[dict]:
    listed = subprocess.run([str(BIN / "ray"), "list", "nodes", "--address", gcs, "--format", "json"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    return [n for n in json.loads(listed.stdout) if n["state"] == "ALIVE"]


@pytest.mark.usefixtures("beside_unrelated_ray")
def test_submitted_sweeps_run_on_the_nodes_with_their_storage_mlflow_and_gpus(model_dir, data_dir, tmp_path):
    """Without the token the job API refuses the client. A sweep file with a relative
    storage_path is refused before anything runs (the job's working directory is Ray's temporary
    copy). A sweep asking for half a GPU per trial runs every trial on the worker, the node that
    has the GPUs; resubmitting after adding a seed trains only that seed; MLflow on PostgreSQL
    holds every run, its metrics and its artifacts (through the server's artifact store)."""
    workdir, storage = tmp_path / "job", tmp_path / "shared"
    workdir.mkdir()
    sweep = {"name": "cluster", "model": model_dir, "tasks": ["trec-coarse"], "methods": ["none", "ssmix"],
             "seeds": [0, 1], "data_dir": str(data_dir), "resources": {"cpu": 1, "gpu": 0.5, "cpu_fallback": True},
             "trial": {"batch_size": 8, "eval_every": 3, "phase1": {"epochs": 1, "lr": 5e-4},
                       "phase2": {"epochs": 1, "lr": 1e-4}}}
    with tracking_backend() as database, mlflow_server(tmp_path / "mlflow", backend_uri=database) as tracking_uri:
        node_env = {"SSMIX_STORAGE_PATH": str(storage), "MLFLOW_TRACKING_URI": tracking_uri}
        with ray_head(tmp_path, num_cpus=1, node_env=node_env) as (dashboard, env, gcs), \
                ray_worker(gcs, dict(env, **node_env), tmp_path, num_cpus=2, num_gpus=2):
            nodes = alive_nodes(gcs, env)
            assert len(nodes) == 2
            (gpu_node,) = [n["node_id"] for n in nodes if not n["is_head_node"]]
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

            (workdir / "sweep.yaml").write_text(yaml.safe_dump(dict(sweep, seeds=[0, 1, 2])))
            job = submit_job(dashboard, env, workdir, ["ssmix", "sweep", "run", "sweep.yaml"])
            assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
            assert "6 cells, 4 already done, 2 to train" in job.stdout + job.stderr

        results = [json.loads(p.read_text()) for p in (storage / "cluster" / "cells").glob("*/result.json")]
        assert len(results) == 6
        for result in results:                         # every trial on the GPU node, half a card each
            where = result["placement"]
            assert where["node_id"] == gpu_node and where["assigned"]["GPU"] == 0.5, where
            assert len(where["gpu_ids"]) == 1 and where["device"] == "cpu"   # no CUDA here: the fallback

        client = MlflowClient(tracking_uri=tracking_uri)
        runs = client.search_runs([client.get_experiment_by_name("cluster").experiment_id],
                                  filter_string="tags.`ssmix.cell` != ''")
        assert sorted(r.data.tags["ssmix.kind"] for r in runs) == ["phase1"] * 3 + ["phase2"] * 3
        assert all(r.info.status == "FINISHED" for r in runs)
        assert all("best_acc_test" in r.data.metrics for r in runs)
        assert {r.data.tags["ssmix.node_id"] for r in runs} == {gpu_node}
        assert client.get_metric_history(runs[0].info.run_id, "acc_test")
        # artifacts went through the server to its artifact store
        assert "trial_config.json" in [a.path for a in client.list_artifacts(runs[0].info.run_id)]
        assert list((tmp_path / "mlflow" / "artifacts").rglob("trial_config.json"))
