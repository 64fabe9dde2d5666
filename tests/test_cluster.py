"""A cluster on loopback, as the compose file builds it but natively (no Docker engine here):
PostgreSQL, the MLflow server with accounts on it (cluster/mlflow-server.sh) and a served artifact
store, a Ray head with token auth and a worker node with two (logical) GPUs; the nodes name the
shared storage (SSMIX_STORAGE_PATH) and the MLflow server (MLFLOW_TRACKING_URI), the sweep file
names neither; sweeps go in through `ray job submit`, with the user's MLflow credentials in the
job's runtime environment. One cluster for every check, since starting it is most of the cost."""

import json
import secrets
import subprocess

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.servers import (
    ADMIN,
    BIN,
    create_user,
    mlflow_auth_server,
    postgres_bin,
    postgres_server,
    ray_head,
    ray_worker,
    submit_job,
)

# Slow (real Ray, servers or processes: minutes); one xdist worker runs the cluster tests, in turn,
# beside the one unrelated Ray head they share.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cluster")]


PG_PASSWORD = "pg-" + secrets.token_hex(12)    # in the MLflow server's store URIs, as in the compose file


def tracking_backend():
    """PostgreSQL as in the compose file (its tracking store and its accounts database) where
    Debian's server is installed (.ci/run installs it), else the server's SQLite defaults: the
    job path is tested either way. Yields (store URI, accounts URI), or (None, None)."""
    from contextlib import contextmanager

    @contextmanager
    def databases():
        if postgres_bin() is None:
            yield None, None
            return
        with postgres_server("mlflow", "mlflow_auth") as uri:
            # The server trusts loopback (no password is asked), so the password is carried as the
            # compose file carries it, and must still appear nowhere.
            uri = uri.replace("postgres@", f"postgres:{PG_PASSWORD}@")
            yield uri, uri.rsplit("/", 1)[0] + "/mlflow_auth"

    return databases()


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
    holds every run, its metrics and its artifacts (through the server's artifact store), made by
    the submitting user's account; no secret (the user's password, the Ray token, PostgreSQL's
    password) reaches the job's logs, the storage or MLflow."""
    workdir, storage = tmp_path / "job", tmp_path / "shared"
    workdir.mkdir()
    sweep = {"name": "cluster", "model": model_dir, "tasks": ["trec-coarse"], "methods": ["none", "ssmix"],
             "seeds": [0, 1], "data_dir": str(data_dir), "resources": {"cpu": 1, "gpu": 0.5, "cpu_fallback": True},
             "trial": {"batch_size": 8, "eval_every": 3, "phase1": {"epochs": 1, "lr": 5e-4},
                       "phase2": {"epochs": 1, "lr": 1e-4}}}
    user = ("ana", "ana-" + secrets.token_hex(8))
    credentials = ["--runtime-env-json", json.dumps({"env_vars": {"MLFLOW_TRACKING_USERNAME": user[0],
                                                                  "MLFLOW_TRACKING_PASSWORD": user[1]}})]
    logs = []
    with tracking_backend() as (database, accounts), \
            mlflow_auth_server(tmp_path / "mlflow", backend_uri=database, auth_uri=accounts) as tracking_uri:
        create_user(tracking_uri, *user)
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
            job = submit_job(dashboard, env, workdir, ["ssmix", "sweep", "run", "sweep.yaml"], credentials)
            output = job.stdout + job.stderr
            assert job.returncode != 0
            assert "storage_path: './ray_results' is relative" in output, output[-3000:]
            assert "absolute path that every node mounts" in output
            assert "to train" not in output and not storage.exists()

            (workdir / "sweep.yaml").write_text(yaml.safe_dump(sweep))
            job = submit_job(dashboard, env, workdir, ["ssmix", "sweep", "run", "sweep.yaml"], credentials)
            assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
            assert "4 cells, 0 already done, 4 to train" in job.stdout + job.stderr
            logs.append(job.stdout + job.stderr)

            (workdir / "sweep.yaml").write_text(yaml.safe_dump(dict(sweep, seeds=[0, 1, 2])))
            job = submit_job(dashboard, env, workdir, ["ssmix", "sweep", "run", "sweep.yaml"], credentials)
            assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
            assert "6 cells, 4 already done, 2 to train" in job.stdout + job.stderr
            logs.append(job.stdout + job.stderr)
            # Ray's own record of every job: its logs, as `ray job logs` shows them.
            listed = subprocess.run([str(BIN / "ray"), "job", "list", "--address", dashboard], env=env,
                                    capture_output=True, text=True, timeout=120)
            for job_id in sorted(set(part for part in listed.stdout.split("'") if part.startswith("raysubmit_"))):
                logs.append(subprocess.run([str(BIN / "ray"), "job", "logs", job_id, "--address", dashboard],
                                           env=env, capture_output=True, text=True, timeout=120).stdout)
            token = env["RAY_AUTH_TOKEN"]

        results = [json.loads(p.read_text()) for p in (storage / "cluster" / "cells").glob("*/result.json")]
        assert len(results) == 6
        for result in results:                         # every trial on the GPU node, half a card each
            where = result["placement"]
            assert where["node_id"] == gpu_node and where["assigned"]["GPU"] == 0.5, where
            assert len(where["gpu_ids"]) == 1 and where["device"] == "cpu"   # no CUDA here: the fallback

        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MLFLOW_TRACKING_USERNAME", user[0])
            patch.setenv("MLFLOW_TRACKING_PASSWORD", user[1])
            client = MlflowClient(tracking_uri=tracking_uri)
            experiment = client.get_experiment_by_name("cluster").experiment_id
            runs = client.search_runs([experiment], filter_string="tags.`ssmix.cell` != ''")
            assert sorted(r.data.tags["ssmix.kind"] for r in runs) == ["phase1"] * 3 + ["phase2"] * 3
            assert all(r.info.status == "FINISHED" for r in runs)
            assert all("best_acc_test" in r.data.metrics for r in runs)
            assert {r.data.tags["ssmix.node_id"] for r in runs} == {gpu_node}
            assert client.get_metric_history(runs[0].info.run_id, "acc_test")
            assert {r.info.user_id for r in runs} == {user[0]}      # made as the submitting user
            # artifacts went through the server to its artifact store
            assert "trial_config.json" in [a.path for a in client.list_artifacts(runs[0].info.run_id)]
            assert list((tmp_path / "mlflow" / "artifacts").rglob("trial_config.json"))
            every_run = json.dumps([r.to_dictionary() for r in client.search_runs([experiment], max_results=1000)])

    # No secret in the jobs' logs, the store's runs, the storage or the artifacts.
    secret_values = {"the user's password": user[1], "the Ray token": token, "PostgreSQL's password": PG_PASSWORD,
                     "the MLflow admin's password": ADMIN[1]}
    places = {f"job log {i}": text for i, text in enumerate(logs)}
    places["MLflow's runs"] = every_run
    for folder in (storage, tmp_path / "mlflow" / "artifacts", workdir):
        for path in folder.rglob("*"):
            if path.is_file():
                places[str(path)] = path.read_bytes().decode("utf-8", "replace")
    leaks = [f"{name} in {where}" for where, text in places.items() for name, value in secret_values.items()
             if value in text]
    assert leaks == [] and len(logs) == 5, leaks      # two jobs' output, and all three logs as Ray keeps them
