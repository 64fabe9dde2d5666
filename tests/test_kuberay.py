"""cluster/kuberay/rayjob.yaml: what the sweep needs from the manifest, and the manifest against
KubeRay's RayJob CRD schema: the copy in tests/data/kuberay (its README says which release), or
the ray.io_rayjobs.yaml that SSMIX_KUBERAY_CRD names. Unknown keys are errors, as the API
server's structural pruning would silently drop them."""

import gzip
import json
import os
import re
from pathlib import Path

import yaml

from ssmix.sweep.spec import load_sweep, storage_scheme_problem

ROOT = Path(__file__).resolve().parents[1]
KUBERAY = ROOT / "cluster" / "kuberay"
RAYJOB = yaml.safe_load((KUBERAY / "rayjob.yaml").read_text())
SECRET = yaml.safe_load((KUBERAY / "secret.example.yaml").read_text())
CLUSTER = RAYJOB["spec"]["rayClusterSpec"]
HEAD = CLUSTER["headGroupSpec"]
WORKERS = CLUSTER["workerGroupSpecs"]


def containers():
    yield from HEAD["template"]["spec"]["containers"]
    for group in WORKERS:
        yield from group["template"]["spec"]["containers"]


def test_entrypoint_runs_a_sweep_file_of_the_image():
    command = RAYJOB["spec"]["entrypoint"].split()
    assert command[:3] == ["ssmix", "sweep", "run"]
    image_path = Path(command[3])
    # The Dockerfile copies sweeps/ to /opt/ssmix/sweeps.
    assert image_path.parent == Path("/opt/ssmix/sweeps")
    assert "WORKDIR /opt/ssmix" in (ROOT / "Dockerfile").read_text()
    sweep = load_sweep(ROOT / "sweeps" / image_path.name)
    assert sweep.storage_path is None, "the bucket comes from the secret's SSMIX_STORAGE_PATH"


def test_every_pod_reads_the_secret_with_bucket_and_mlflow_account():
    for container in containers():
        assert {"secretRef": {"name": SECRET["metadata"]["name"]}} in container["envFrom"], container["name"]
    env = SECRET["stringData"]
    assert storage_scheme_problem(env["SSMIX_STORAGE_PATH"]) is None
    assert env["SSMIX_STORAGE_PATH"].startswith("s3://")
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME",
            "MLFLOW_TRACKING_PASSWORD"} <= set(env)
    assert SECRET["kind"] == "Secret"
    # Secrets stay out of the manifest itself.
    assert not re.search(r"PASSWORD|SECRET_ACCESS_KEY", (KUBERAY / "rayjob.yaml").read_text())


def test_trials_on_gpu_workers_only_and_the_cluster_goes_when_done():
    sweep = load_sweep(ROOT / "sweeps" / "table2.yaml")
    assert HEAD["rayStartParams"]["num-cpus"] == "0"
    for group in WORKERS:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= sweep.resources.gpu
        assert int(limits["cpu"]) >= sweep.resources.cpu
    assert RAYJOB["spec"]["shutdownAfterJobFinishes"] is True
    assert CLUSTER["authOptions"]["mode"] == "token"


def test_ray_version_is_the_image_ray():
    pinned = re.search(r"ARG RAY_VERSION=(\S+)", (ROOT / "Dockerfile").read_text()).group(1)
    assert CLUSTER["rayVersion"] == pinned
    for container in containers():
        assert container["image"].endswith(f":{pinned}"), container["image"]


def strict(schema):
    """The CRD's schema with unknown keys refused wherever it lists its keys."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema.setdefault("additionalProperties", False)
        return schema
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


CRD_COPY = ROOT / "tests" / "data" / "kuberay" / "ray.io_rayjobs.v1.json.gz"


def crd_schema():
    where = os.environ.get("SSMIX_KUBERAY_CRD")
    crd = yaml.safe_load(Path(where).read_text()) if where else json.loads(gzip.decompress(CRD_COPY.read_bytes()))
    assert crd["spec"]["names"]["kind"] == "RayJob"
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == RAYJOB["apiVersion"].split("/")[1]]
    return strict(version["schema"]["openAPIV3Schema"])


def test_rayjob_valid_against_the_crd():
    import jsonschema

    schema = crd_schema()
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(RAYJOB), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)
    # The check can fail: a misspelt key is refused.
    broken = yaml.safe_load((KUBERAY / "rayjob.yaml").read_text())
    broken["spec"]["shutdownAfterJobFinish"] = broken["spec"].pop("shutdownAfterJobFinishes")
    assert any("shutdownAfterJobFinish" in e.message for e in jsonschema.Draft7Validator(schema).iter_errors(broken))
