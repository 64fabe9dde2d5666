"""Screenshots of a sweep in the MLflow UI, as a user sees it: starts `mlflow server` on the
sweep's store (127.0.0.1, a free port), opens a page with headless Chromium (Debian's `chromium`),
saves a PNG, stops the server.

    python docs/mlflow_screenshot.py --tracking-uri sqlite:///mlflow.db --experiment search \\
        --view compare --origin search --out docs/search-parallel-coordinates.png

Views: ``runs`` (the experiment's runs table) and ``compare`` (the compare page of the runs whose
tag ``ssmix.origin`` starts with --origin: its parallel-coordinates plot of params and metrics).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"mlflow server at {url} did not come up in {timeout:.0f} s")


def page_url(base: str, tracking_uri: str, experiment: str, view: str, origin: str | None) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"no experiment {experiment!r} at {tracking_uri}")
    if view == "runs":
        return f"{base}/#/experiments/{found.experiment_id}"
    query = "tags.`ssmix.kind` = 'phase2'" + (f" and tags.`ssmix.origin` LIKE '{origin}%'" if origin else "")
    runs = client.search_runs([found.experiment_id], filter_string=query, max_results=200)
    if not runs:
        raise SystemExit(f"no runs match {query!r}")
    ids = json.dumps([r.info.run_id for r in runs])
    params = urllib.parse.urlencode({"runs": ids, "experiments": json.dumps([found.experiment_id])})
    return f"{base}/#/compare-runs?{params}"


def screenshot(url: str, out: Path, width: int, height: int, wait_ms: int) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("chromium not found (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--virtual-time-budget={wait_ms}", f"--screenshot={out.resolve()}", url],
                       check=True, capture_output=True, timeout=180)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--view", choices=["runs", "compare"], default="runs")
    parser.add_argument("--origin", default=None, help="compare: runs whose ssmix.origin tag starts with this")
    parser.add_argument("--out", required=True)
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--wait-ms", type=int, default=20000, help="virtual time the page gets to render")
    args = parser.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", args.tracking_uri, "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_healthy(base)
        url = page_url(base, args.tracking_uri, args.experiment, args.view, args.origin)
        screenshot(url, Path(args.out), args.width, args.height, args.wait_ms)
        print(f"wrote {args.out} ({url})")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
