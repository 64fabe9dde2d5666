"""docker-compose.yml checked by parsing (no Docker engine here) and, where Debian's
docker-compose is installed (.ci/run installs it), by `docker-compose config`."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_services_and_volumes():
    assert set(SERVICES) == {"postgres", "mlflow", "ray-head", "ray-worker"}
    assert set(COMPOSE["volumes"]) == {"pgdata", "mlartifacts", "ray-storage"}
    assert "pgdata:/var/lib/postgresql/data" in SERVICES["postgres"]["volumes"]
    assert "mlartifacts:/mlartifacts" in SERVICES["mlflow"]["volumes"]
    # head and workers share Ray's storage_path
    assert "ray-storage:/shared" in SERVICES["ray-head"]["volumes"]
    assert "ray-storage:/shared" in SERVICES["ray-worker"]["volumes"]


def test_mlflow_has_accounts_on_postgres_and_a_served_artifact_store():
    """The server cluster/mlflow-server.sh starts (basic-auth), its tracking store and its accounts
    in two databases of the PostgreSQL service (the second made by its init script), a user
    given nothing on others' experiments, every secret from .env."""
    mlflow = SERVICES["mlflow"]
    env = mlflow["environment"]
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    assert env["MLFLOW_AUTH_DATABASE_URI"].startswith("postgresql://")
    assert env["MLFLOW_AUTH_DATABASE_URI"].endswith("/${POSTGRES_AUTH_DB:-mlflow_auth}")
    assert env["MLFLOW_AUTH_DEFAULT_PERMISSION"] == "NO_PERMISSIONS"
    assert env["MLFLOW_ARTIFACTS_DESTINATION"] == "${MLFLOW_ARTIFACTS_DESTINATION:-/mlartifacts}"
    for key in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert env[key].startswith("${") and ":?" in env[key], key
    assert mlflow["command"] == ["sh", "/opt/ssmix/cluster/mlflow-server.sh"]
    script = (ROOT / "cluster" / "mlflow-server.sh").read_text()
    assert "--app-name basic-auth" in script and '--artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION"' in script
    assert "COPY cluster/mlflow-server.sh" in (ROOT / "Dockerfile").read_text()
    assert "./cluster/postgres-init:/docker-entrypoint-initdb.d:ro" in SERVICES["postgres"]["volumes"]
    assert "CREATE DATABASE" in (ROOT / "cluster" / "postgres-init" / "10-mlflow-auth.sh").read_text()
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_health_checks():
    for name in ("postgres", "mlflow", "ray-head"):
        assert SERVICES[name]["healthcheck"]["test"], name
    assert "pg_isready" in " ".join(SERVICES["postgres"]["healthcheck"]["test"])
    assert "/health" in " ".join(SERVICES["mlflow"]["healthcheck"]["test"])


def test_ray_token_auth_and_gpu_reservation():
    for name in ("ray-head", "ray-worker"):
        env = SERVICES[name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token"
        assert env["RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN")
        # A sweep file without storage_path lands on the volume every node mounts, not in the job's copy.
        assert env["SSMIX_STORAGE_PATH"].startswith("${SSMIX_STORAGE_PATH:-/shared/")
    assert "--head" in SERVICES["ray-head"]["command"]
    assert "--address=ray-head:6379" in SERVICES["ray-worker"]["command"]
    devices = SERVICES["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_ports_published_on_loopback_only():
    published = [(name, port) for name, svc in SERVICES.items() for port in svc.get("ports", [])]
    assert published, "the MLflow UI and the Ray dashboard must be reachable from the host"
    for name, port in published:
        assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_no_secret_inline():
    text = (ROOT / "docker-compose.yml").read_text()
    for key in ("POSTGRES_PASSWORD", "RAY_AUTH_TOKEN", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        for value in re.findall(rf"^\s*{key}:\s*(\S+)", text, flags=re.MULTILINE):
            assert value.startswith("${"), f"{key} is set inline: {value}"
    assert "change-me" not in text                  # the example values stay in .env.example
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".env" in ignored and (ROOT / ".env.example").exists()


@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="Debian's docker-compose is not installed (.ci/run installs it)")
def test_docker_compose_config_validates(tmp_path):
    done = subprocess.run(["docker-compose", "--env-file", ".env.example", "config", "-q"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (tmp_path / "empty.env").write_text("")
    missing = subprocess.run(["docker-compose", "--env-file", str(tmp_path / "empty.env"), "config", "-q"], cwd=ROOT,
                             capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert missing.returncode != 0 and "set POSTGRES_PASSWORD in .env" in missing.stderr


@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="Debian's docker-compose is not installed (.ci/run installs it)")
def test_results_and_artifacts_on_volumes_or_in_a_bucket(tmp_path):
    """.env.example's optional lines move results and MLflow's artifacts from the volumes to a bucket."""
    def rendered(env_text):
        (tmp_path / "cluster.env").write_text(env_text)
        done = subprocess.run(["docker-compose", "--env-file", str(tmp_path / "cluster.env"), "config"], cwd=ROOT,
                              capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, check=True)
        return yaml.safe_load(done.stdout)["services"]

    example = (ROOT / ".env.example").read_text()
    services = rendered(example)
    assert services["mlflow"]["environment"]["MLFLOW_ARTIFACTS_DESTINATION"] == "/mlartifacts"
    assert services["ray-head"]["environment"]["SSMIX_STORAGE_PATH"] == "/shared/ray_results"
    # The optional lines, uncommented.
    services = rendered(re.sub(r"^# ([A-Z_]+=)", r"\1", example, flags=re.MULTILINE))
    mlflow, head = services["mlflow"]["environment"], services["ray-head"]["environment"]
    assert mlflow["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert mlflow["MLFLOW_S3_ENDPOINT_URL"] == head["AWS_ENDPOINT_URL"] and head["AWS_ENDPOINT_URL"].startswith("http")
    assert head["SSMIX_STORAGE_PATH"].startswith("s3://")
    assert services["ray-worker"]["environment"]["SSMIX_STORAGE_PATH"] == head["SSMIX_STORAGE_PATH"]
