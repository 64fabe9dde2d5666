"""`ray up` / `ray submit` with the shipped cluster/local.yaml, for real on loopback: Debian's sshd
on 127.0.0.1 is the "machine", Ray's cluster launcher installs and starts a token-auth head on it
over SSH, `ray submit` starts a tiny sweep there, and the runs are read back through MLflow.

The project is a copy of this checkout, as a user's would be, with cluster/cluster.env written as
the README says. local.yaml is used as shipped except what names this machine: the SSH key, the
sshd port (Ray has no port setting, so an `nc` proxy command), and the head's address pinned to
127.0.0.1 (servers in tests bind to loopback only)."""

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.servers import BIN, mlflow_server, ssh_node

# Slow (real Ray, servers or processes: minutes); one xdist worker runs the cluster tests, in turn,
# beside the one unrelated Ray head they share.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cluster")]

REPO = Path(__file__).resolve().parents[1]


def copy_project(target):
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)


@pytest.mark.usefixtures("beside_unrelated_ray")
def test_ray_up_and_ray_submit_run_a_sweep_on_the_local_provider(model_dir, data_dir, tmp_path):
    project = tmp_path / "project"
    copy_project(project)
    storage = tmp_path / "shared"
    ray = lambda *args, timeout=600: subprocess.run(  # noqa: E731
        [str(BIN / "ray"), *args], cwd=project, capture_output=True, text=True, timeout=timeout)
    with mlflow_server(tmp_path / "mlflow") as tracking_uri, ssh_node(tmp_path / "node") as (port, key, home):
        (project / "cluster" / "cluster.env").write_text(
            (project / "cluster" / "cluster.env.example").read_text()
            .replace("http://mlflow.internal:5000", tracking_uri).replace("/shared/ray_results", str(storage)))
        (project / "sweeps" / "tiny.yaml").write_text(yaml.safe_dump({
            "name": "launcher", "model": model_dir, "tasks": ["trec-coarse"], "methods": ["none", "ssmix"],
            "seeds": [0], "data_dir": str(data_dir), "resources": {"cpu": 1},
            "trial": {"batch_size": 8, "eval_every": 3, "phase1": {"epochs": 1, "lr": 5e-4},
                      "phase2": {"epochs": 1, "lr": 1e-4}}}))
        config_path = project / "cluster" / "local.yaml"
        config = yaml.safe_load(config_path.read_text())
        assert config["provider"]["type"] == "local"
        config["auth"] = {"ssh_user": config["auth"]["ssh_user"], "ssh_private_key": str(key),
                          "ssh_proxy_command": f"nc 127.0.0.1 {port}"}
        config["head_start_ray_commands"] = [
            c.replace("ray start --head", "ray start --head --node-ip-address=127.0.0.1 --num-cpus=2")
            for c in config["head_start_ray_commands"]]
        config_path.write_text(yaml.safe_dump(config))
        assert ray("get-auth-token", "--generate").returncode == 0
        try:
            up = ray("up", "cluster/local.yaml", "-y")
            assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
            # The launcher synced the project and the token to the node and started a token-auth head.
            assert (home / "ssmix" / "sweeps" / "tiny.yaml").is_file()
            assert (home / ".ray" / "auth_token").is_file()
            submitted = ray("submit", "cluster/local.yaml", "cluster/submit_sweep.py", "sweeps/tiny.yaml")
            output = submitted.stdout + submitted.stderr
            assert submitted.returncode == 0, output[-4000:]
            assert "[sweep] launcher: 2 cells, 0 already done, 2 to train" in output
            # Submitting again trains nothing: the results are on the shared storage, not in a copy.
            again = ray("submit", "cluster/local.yaml", "cluster/submit_sweep.py", "sweeps/tiny.yaml")
            assert "2 cells, 2 already done, 0 to train" in again.stdout + again.stderr, again.stdout[-3000:]
        finally:
            down = ray("down", "cluster/local.yaml", "-y")
        assert down.returncode == 0, down.stderr[-2000:]
        assert (storage / "launcher").is_dir()
        client = MlflowClient(tracking_uri=tracking_uri)
        runs = client.search_runs([client.get_experiment_by_name("launcher").experiment_id],
                                  filter_string="tags.`ssmix.cell` != ''")
        assert sorted(r.data.tags["ssmix.kind"] for r in runs) == ["phase1", "phase2"]
        assert all(r.info.status == "FINISHED" for r in runs)
        # Both cells ran on the one node the launcher started, on its CPU (no GPU declared).
        assert len({r.data.tags["ssmix.node_id"] for r in runs}) == 1 and all(r.data.tags["ssmix.node_ip"] for r in runs)
        assert [r.data.tags["ssmix.device"] for r in runs] == ["cpu", "cpu"]


def test_cluster_configs_pass_rays_schema_with_token_auth_and_the_project_synced():
    from ray.autoscaler._private.util import prepare_config, validate_config

    configs = {name: yaml.safe_load((REPO / "cluster" / f"{name}.yaml").read_text()) for name in ("aws", "local")}
    for name, config in configs.items():
        validate_config(prepare_config(config))   # what `ray up` checks before it touches a machine
        for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
            assert any("RAY_AUTH_MODE=token ray start" in c for c in commands), name
        assert any("--dashboard-host=127.0.0.1" in c for c in config["head_start_ray_commands"]), name
        assert config["file_mounts"] == {"~/ssmix": ".", "~/.ray/auth_token": "~/.ray/auth_token"}, name
        assert any("ssmix[sweep,minilm,cluster]" in c for c in config["setup_commands"]), name
    workers = configs["aws"]["available_node_types"]["gpu_worker"]
    assert workers["resources"]["GPU"] >= 1 and workers["max_workers"] >= 1
    assert configs["aws"]["available_node_types"]["head"]["resources"]["GPU"] == 0


def test_submit_script_reads_cluster_env_and_names_a_bad_line(tmp_path):

    spec = importlib.util.spec_from_file_location("submit_sweep", REPO / "cluster" / "submit_sweep.py")
    submit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(submit)
    env = tmp_path / "cluster.env"
    env.write_text((REPO / "cluster" / "cluster.env.example").read_text())
    assert set(submit.read_env_file(env)) == {"MLFLOW_TRACKING_URI", "SSMIX_STORAGE_PATH"}
    env.write_text("# comment\n\nMLFLOW_TRACKING_URI=http://x:5000\nnot a pair\n")
    with pytest.raises(SystemExit, match=r"cluster.env:4: expected KEY=VALUE, got 'not a pair'"):
        submit.read_env_file(env)
