"""A team's MLflow server with accounts, tried by a real attacker's requests: the server as the
compose file runs it (cluster/mlflow-server.sh: `mlflow server --app-name basic-auth`, accounts on
PostgreSQL beside the tracking store where Debian's server is installed, NO_PERMISSIONS by
default) on loopback, one server for the module. Nobody gets in without an account; a reader
reads and writes nothing; a sweep runs as its user, and a refused one says why before it trains;
no secret of the environment reaches anything a sweep leaves; the printed link opens Table 2
for a user who logs in."""

import json
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ssmix.cli import main
from tests.helpers import BIN, sweep_file
from tests.servers import ADMIN, create_user, mlflow_auth_server, postgres_bin, postgres_server

pytestmark = pytest.mark.slow

ALICE = ("alice", "alice-" + secrets.token_hex(8))
BOB = ("bob", "bob-" + secrets.token_hex(8))
CAROL = ("carol", "carol-" + secrets.token_hex(8))
# Planted in the sweep's environment: none may reach anything the sweep leaves.
SECRETS = {"RAY_AUTH_TOKEN": "raytok-" + secrets.token_hex(12), "POSTGRES_PASSWORD": "pgpw-" + secrets.token_hex(12),
           "AWS_SECRET_ACCESS_KEY": "awssecret-" + secrets.token_hex(12), "AWS_ACCESS_KEY_ID": "AKIA" + secrets.token_hex(8),
           "MLFLOW_FLASK_SERVER_SECRET_KEY": "flask-" + secrets.token_hex(12)}
# Every REST route a sweep, `sweep sync` and `ssmix report` use (method, path, body), and the UI's.
ROUTES = [("GET", "/api/2.0/mlflow/experiments/get-by-name?experiment_name=x", None),
          ("POST", "/api/2.0/mlflow/experiments/create", {"name": "x"}),
          ("POST", "/api/2.0/mlflow/experiments/search", {"max_results": 1}),
          ("POST", "/api/2.0/mlflow/experiments/set-experiment-tag", {"experiment_id": "1", "key": "k", "value": "v"}),
          ("GET", "/api/2.0/mlflow/experiments/get?experiment_id=1", None),
          ("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": "1"}),
          ("POST", "/api/2.0/mlflow/runs/search", {"experiment_ids": ["1"]}),
          ("GET", "/api/2.0/mlflow/runs/get?run_id=0", None),
          ("POST", "/api/2.0/mlflow/runs/update", {"run_id": "0", "status": "KILLED"}),
          ("POST", "/api/2.0/mlflow/runs/log-batch", {"run_id": "0", "metrics": []}),
          ("POST", "/api/2.0/mlflow/runs/set-tag", {"run_id": "0", "key": "k", "value": "v"}),
          ("POST", "/api/2.0/mlflow/runs/delete-tag", {"run_id": "0", "key": "k"}),
          ("POST", "/api/2.0/mlflow/runs/log-inputs", {"run_id": "0", "datasets": []}),
          ("POST", "/api/2.0/mlflow/runs/delete", {"run_id": "0"}),
          ("GET", "/api/2.0/mlflow/metrics/get-history?run_id=0&metric_key=m", None),
          ("GET", "/api/2.0/mlflow/artifacts/list?run_id=0", None),
          ("PUT", "/api/2.0/mlflow-artifacts/artifacts/1/0/artifacts/x.txt", b"x"),
          ("GET", "/api/2.0/mlflow-artifacts/artifacts/1/0/artifacts/x.txt", None),
          ("POST", "/ajax-api/2.0/mlflow/experiments/search", {"max_results": 1}),
          ("POST", "/ajax-api/2.0/mlflow/runs/search", {"experiment_ids": ["1"]}),
          ("GET", "/ajax-api/2.0/mlflow/experiments/get-by-name?experiment_name=x", None)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("auth-server")
    with ExitStack() as stack:
        backend = auth = None
        if postgres_bin() is not None:      # as in the compose file (.ci/run installs PostgreSQL)
            backend = stack.enter_context(postgres_server("mlflow", "mlflow_auth"))
            auth = backend.rsplit("/", 1)[0] + "/mlflow_auth"
        url = stack.enter_context(mlflow_auth_server(root, backend, auth))
        for user in (ALICE, BOB, CAROL):
            create_user(url, *user)
        yield url, root


def as_user(user) -> dict:
    return {"MLFLOW_TRACKING_USERNAME": user[0], "MLFLOW_TRACKING_PASSWORD": user[1]}


def client_as(monkeypatch, url, user) -> MlflowClient:
    for key, value in as_user(user).items():
        monkeypatch.setenv(key, value)
    return MlflowClient(tracking_uri=url)


def ssmix(*args, cwd, env):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    return subprocess.run([str(BIN / "ssmix"), *args], cwd=cwd, env=dict(environment, **env), capture_output=True,
                          text=True)


def ssmix_here(capsys, *args, cwd, env):
    """``ssmix`` as ``ssmix(...)`` runs it, in this process: the commands after the first sweep,
    without a process's imports each."""
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("MLFLOW_TRACKING_")]:
            patch.delenv(key)
        for key, value in env.items():
            patch.setenv(key, value)
        patch.chdir(cwd)
        code = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def status_of(url, method, path, body, auth=None) -> int:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    return requests.request(method, url + path, data=data, auth=auth, timeout=30,
                            headers={"Content-Type": "application/json"}).status_code


def test_without_credentials_every_route_a_sweep_uses_answers_401(server):
    url, _ = server
    assert status_of(url, "GET", "/health", None) == 200          # what load balancers probe stays open
    answered = {(method, path): status_of(url, method, path, body) for method, path, body in ROUTES}
    assert set(answered.values()) == {401}, answered
    wrong = {(method, path): status_of(url, method, path, body, auth=(ALICE[0], "not-her-password"))
             for method, path, body in ROUTES}
    assert set(wrong.values()) == {401}, wrong
    page = urllib.request.Request(url + "/", headers={"Accept": "text/html"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(page, timeout=30)                  # the UI itself asks for a login
    assert refused.value.code == 401


def test_the_admin_rotates_a_password_as_the_guide_says(server):
    url, _ = server
    dave = ("dave", "dave-" + secrets.token_hex(8))
    create_user(url, *dave)
    search = ("POST", "/api/2.0/mlflow/experiments/search", {"max_results": 1})
    assert status_of(url, *search, auth=dave) == 200
    rotated = requests.patch(f"{url}/api/2.0/mlflow/users/update-password", auth=ADMIN, timeout=30,
                             json={"username": dave[0], "password": dave[1] + "-new"})
    assert rotated.status_code == 200, rotated.text
    assert status_of(url, *search, auth=dave) == 401
    assert status_of(url, *search, auth=(dave[0], dave[1] + "-new")) == 200


def test_a_sweep_runs_as_its_user_and_a_reader_can_read_and_do_nothing_else(server, model_dir, data_dir,
                                                                            tmp_path, monkeypatch, capsys):
    url, root = server
    path = sweep_file(tmp_path, model_dir, data_dir, name="alice-study", seeds=(0,), tracking_uri=url)
    environment = dict(as_user(ALICE), **SECRETS)
    done = ssmix("sweep", "run", "--in-process", str(path), cwd=tmp_path, env=environment)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    alice = client_as(monkeypatch, url, ALICE)
    experiment = alice.get_experiment_by_name("alice-study")
    runs = alice.search_runs([experiment.experiment_id], "tags.`ssmix.cell` != ''")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert {r.info.user_id for r in alice.search_runs([experiment.experiment_id])} == {ALICE[0]}   # the UI's User
    owner = requests.get(f"{url}/api/3.0/mlflow/users/permissions/get", auth=ALICE, timeout=30, params={
        "username": ALICE[0], "resource_type": "experiment", "resource_id": experiment.experiment_id})
    assert owner.status_code == 200 and "MANAGE" in owner.text    # the experiment is its creator's

    # Sync and the report work for her; the printed link names the server.
    synced = ssmix_here(capsys, "sweep", "sync", str(path), cwd=tmp_path, env=environment)
    assert synced.returncode == 0, synced.stderr[-3000:]
    report = ssmix_here(capsys, "report", "alice-study", "--tracking-uri", url, "--out", str(tmp_path / "report"),
                        cwd=tmp_path, env=environment)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "logged to MLflow run" in report.stdout and f"Table 2 in MLflow: {url}/#/experiments/" in report.stdout
    # The printed link, in headless Chromium with a fresh profile, her credentials given to the
    # browser: it opens the sweep's summary runs as Table 2.
    link = next(line.split()[-1] for line in done.stdout.splitlines() if "Table 2 in MLflow" in line)
    shown = subprocess.run([sys.executable, "-c", BROWSE, link, ALICE[0], ALICE[1], str(tmp_path / "table2.png")],
                           capture_output=True, text=True, timeout=240)
    assert shown.returncode == 0, shown.stdout[-3000:] + shown.stderr[-3000:]
    assert "chromium not found" in shown.stdout or "ssmix λ0=0.1 · trec-coarse · summary" in shown.stdout, \
        shown.stdout[-3000:]

    # Bob reads what Alice gave him, and changes nothing of it.
    granted = requests.post(f"{url}/api/3.0/mlflow/users/permissions/grant", auth=ALICE, timeout=30, json={
        "username": BOB[0], "resource_type": "experiment", "resource_id": experiment.experiment_id,
        "permission": "READ"})
    assert granted.status_code == 200, granted.text
    bob = client_as(monkeypatch, url, BOB)
    assert bob.get_experiment_by_name("alice-study").experiment_id == experiment.experiment_id
    run = bob.search_runs([experiment.experiment_id], "tags.`ssmix.cell` != ''")[0]
    attempts = {"log a metric": lambda: bob.log_metric(run.info.run_id, "best_acc_test", 100.0),
                "end the run": lambda: bob.set_terminated(run.info.run_id, "FAILED"),
                "delete the run": lambda: bob.delete_run(run.info.run_id),
                "rename the run": lambda: bob.update_run(run.info.run_id, name="bob was here"),
                "tag the experiment": lambda: bob.set_experiment_tag(experiment.experiment_id, "k", "v"),
                "delete the experiment": lambda: bob.delete_experiment(experiment.experiment_id)}
    for what, attempt in attempts.items():
        with pytest.raises(MlflowException) as refused:
            attempt()
        assert refused.value.get_http_status_code() == 403, what
    upload = status_of(url, "PUT", f"/api/2.0/mlflow-artifacts/artifacts/{experiment.experiment_id}/"
                       f"{run.info.run_id}/artifacts/x.txt", b"x", auth=BOB)
    assert upload == 403
    assert alice.get_run(run.info.run_id).info.status == "FINISHED"           # untouched
    # Carol was given nothing: she cannot even read it.
    carol = client_as(monkeypatch, url, CAROL)
    with pytest.raises(MlflowException) as refused:
        carol.get_experiment_by_name("alice-study")
    assert refused.value.get_http_status_code() == 403
    assert carol.search_runs([experiment.experiment_id]) == []

    # A reader's report is written but not logged; a refused sweep says why in one line, trains nothing.
    bob_report = ssmix_here(capsys, "report", "alice-study", "--tracking-uri", url, "--out", str(tmp_path / "bob"),
                            cwd=tmp_path, env=as_user(BOB))
    assert bob_report.returncode == 0 and "not logged to MLflow" in bob_report.stdout, bob_report.stderr[-2000:]
    as_bob = ssmix_here(capsys, "sweep", "run", "--in-process", str(path), cwd=tmp_path, env=as_user(BOB))
    assert as_bob.returncode == 2, as_bob.stdout[-2000:] + as_bob.stderr[-2000:]
    assert as_bob.stderr.strip().splitlines() == [
        f"ssmix: error: MLflow user 'bob' may not log to experiment 'alice-study' at {url} (403): it needs EDIT on "
        f"it, from its owner or an admin (docs/clusters.md), or name another experiment"]
    other = sweep_file(tmp_path, model_dir, data_dir, name="other", seeds=(0,), tracking_uri=url)
    wrong = ssmix_here(capsys, "sweep", "run", "--in-process", str(other), cwd=tmp_path,
                       env=as_user((ALICE[0], "not-her-password")))
    assert wrong.returncode == 2 and len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr[-2000:]
    assert "refused the credentials of user 'alice' (401)" in wrong.stderr
    assert not (tmp_path / "storage" / "other").exists() and "to train" not in wrong.stdout

    # Nothing the sweeps left holds a secret: the tracking store, the artifacts, the storage, what
    # they printed, the report.
    leaked = scan([root, tmp_path], [done.stdout, done.stderr, synced.stdout, synced.stderr, report.stdout,
                                     report.stderr, as_bob.stderr, wrong.stderr],
                  list(SECRETS.values()) + [ALICE[1], BOB[1], ADMIN[1]])
    assert leaked == [], leaked


def scan(folders: list[Path], outputs: list[str], secret_values: list[str]) -> list[str]:
    """Where any of ``secret_values`` appears: files under ``folders`` (bytes), and ``outputs``."""
    found = []
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                found += [f"{path}: {v[:6]}..." for v in secret_values if v.encode() in data]
    found += [f"output {i}: {v[:6]}..." for i, text in enumerate(outputs) for v in secret_values if v in text]
    return found


# Playwright in a process of its own (its event loop stays out of pytest's): the page at the link,
# logged in with HTTP basic credentials, until the summary runs are listed. (Without Debian's
# chromium, which .ci/run installs, it says so and the rest of the test still runs.)
BROWSE = """
import shutil, sys, tempfile
from playwright.sync_api import sync_playwright
link, user, password, shot = sys.argv[1:5]
chromium = shutil.which("chromium")
if chromium is None:
    print("chromium not found"); sys.exit(0)
with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
    browser = p.chromium.launch_persistent_context(profile, executable_path=chromium, headless=True,
        http_credentials={"username": user, "password": password},
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
              "--no-first-run", "--disable-sync"])
    page = browser.new_page()
    page.goto(link)
    page.get_by_text("summary").first.wait_for(timeout=90_000)
    page.screenshot(path=shot)
    print(page.inner_text("body"))
    browser.close()
"""
