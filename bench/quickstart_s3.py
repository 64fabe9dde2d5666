"""The quickstart on object storage against the quickstart on disk, in one run on one machine.

    python bench/quickstart_s3.py [--runner ray|in-process]

Runs `ssmix sweep run sweeps/quickstart.yaml` (the real MiniLM on TREC-coarse, 6 cells) twice:
with ``SSMIX_STORAGE_PATH`` a fresh local folder, then ``s3://quickstart/bench`` on an
S3-compatible server on loopback (moto's ThreadedMotoServer, no proxy), each with its own MLflow
store (``MLFLOW_TRACKING_URI``), from the repository as ./quickstart runs it. Then a rerun of each
(trains nothing), and ``sweep status`` of each for what the storage holds. Prints wall times,
storage and the accuracies, measured.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.servers import free_port  # noqa: E402

SWEEP = REPO / "sweeps" / "quickstart.yaml"


def ssmix(args: list[str], cwd: Path, env: dict) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ssmix", *args], cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"`ssmix {' '.join(args)}` in {cwd} exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return seconds, done.stdout + done.stderr


def measure(name: str, storage: str, root: Path, env: dict, runner: list[str]) -> dict:
    (root / name).mkdir()
    cwd = REPO         # the sweep file's data_dir is relative to where it is run, as in ./quickstart
    env = dict(env, SSMIX_STORAGE_PATH=storage, MLFLOW_TRACKING_URI=f"sqlite:///{root / name / 'mlflow.db'}")
    wall, out = ssmix(["sweep", "run", *runner, str(SWEEP)], cwd, env)
    rows = re.findall(r"^\| trec-coarse\s+\| ([^|]+?)\s+\| test\s+\|\s+([\d.]+ ± [\d.]+)", out, re.M)
    rerun, again = ssmix(["sweep", "run", *runner, str(SWEEP)], cwd, env)
    _, status = ssmix(["sweep", "status", str(SWEEP)], cwd, env)
    stored = re.search(r"on storage: ([\d.]+ [kMG]?B) in all", status)
    return {"storage": storage, "wall_s": wall, "rerun_s": rerun, "accuracies": dict(rows),
            "rerun_trained_nothing": "6 already done, 0 to train" in again,
            "stored": stored.group(1) if stored else "?"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runner", choices=["ray", "in-process"], default="ray")
    args = parser.parse_args()
    runner = ["--in-process"] if args.runner == "in-process" else []
    import requests
    from moto.server import ThreadedMotoServer

    root = Path(tempfile.mkdtemp(prefix="ssmix-quickstart-s3-"))
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        requests.put(f"{endpoint}/quickstart", timeout=30).raise_for_status()
        env = dict(os.environ, AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                   AWS_DEFAULT_REGION="us-east-1", RAY_USAGE_STATS_ENABLED="0")
        disk = measure("disk", str(root / "disk" / "ray_results"), root, env, runner)
        s3 = measure("s3", "s3://quickstart/bench", root, env, runner)
    finally:
        moto.stop()
    print(f"quickstart ({args.runner}), one run each on this machine:")
    print("| storage | sweep wall s | rerun s | on storage | accuracies (test, mean ± std) | rerun trained nothing |")
    print("|---|---:|---:|---:|---|---|")
    for m in (disk, s3):
        accuracies = ", ".join(f"{k} {v}" for k, v in m["accuracies"].items())
        print(f"| {m['storage'].split('://')[0] if '://' in m['storage'] else 'disk'} | {m['wall_s']:.1f} | "
              f"{m['rerun_s']:.1f} | {m['stored']} | {accuracies} | {m['rerun_trained_nothing']} |")
    print(f"s3 / disk wall time: {s3['wall_s'] / disk['wall_s']:.2f}; same accuracies: "
          f"{s3['accuracies'] == disk['accuracies']}")
    return 0 if s3["accuracies"] == disk["accuracies"] and disk["accuracies"] else 1


if __name__ == "__main__":
    sys.exit(main())
