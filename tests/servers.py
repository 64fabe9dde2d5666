"""Real servers for integration tests, bound to 127.0.0.1 and stopped by whoever starts them."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, timeout: float = 90, process: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@contextmanager
def mlflow_server(root: Path, backend_uri: str | None = None):
    """``mlflow server`` on 127.0.0.1 with a served artifact store; yields its URL."""
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    log = open(root / "mlflow-server.log", "w")
    process = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", backend_uri or f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", process=process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
        log.close()


@contextmanager
def ray_head(root: Path, num_cpus: int = 2):
    """A Ray head with token authentication on 127.0.0.1; yields (dashboard URL, client env)."""
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(24),
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", RAY_USAGE_STATS_ENABLED="0")
    gcs_port, dashboard_port = free_port(), free_port()
    ray = shutil.which("ray", path=str(BIN)) or "ray"
    subprocess.run([ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
                    "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}", f"--num-cpus={num_cpus}",
                    "--disable-usage-stats"], env=env, check=True, capture_output=True, cwd=root)
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    try:
        yield dashboard, env, f"127.0.0.1:{gcs_port}"
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True)
