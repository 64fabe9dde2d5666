"""MLflow under load: 1,000 cells recorded to the team's MLflow server on PostgreSQL by two drivers
of one sweep file at once.

    python bench/scale_mlflow.py [--cells 1000] [--out DIR]

The compose file's services run natively, as the cluster test runs them: Debian's PostgreSQL (a
throw-away cluster on loopback) and cluster/mlflow-server.sh (accounts on, its credential cache
on). Both drivers run `ssmix sweep run --in-process` of the same file, as one user, on the same
storage: the tiny BERT on 8 real TREC questions a cell. Afterwards: every cell trained once (one
attempt each), one MLflow run per cell, none RUNNING, and the time each driver spent in MLflow
per cell it recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.cell_overhead import tiny_model  # noqa: E402
from bench.scale import sweep_file  # noqa: E402
from ssmix.sweep import ResultStore, load_sweep, plan_cells  # noqa: E402
from tests.servers import create_user, mlflow_auth_server, postgres_server  # noqa: E402

USER = ("bench", "bench-password-1234")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="ssmix-mlflow-load-"))
    root.mkdir(parents=True, exist_ok=True)
    model = tiny_model(root / "model")
    with postgres_server("mlflow", "mlflow_auth") as database, \
            mlflow_auth_server(root / "mlflow", backend_uri=database,
                               auth_uri=database.rsplit("/", 1)[0] + "/mlflow_auth") as url:
        create_user(url, *USER)
        path = sweep_file(root, args.cells, model)
        text = path.read_text().replace(f"sqlite:///{root / 'mlflow.db'}", url)
        path.write_text(text)
        env = dict(os.environ, MLFLOW_TRACKING_USERNAME=USER[0], MLFLOW_TRACKING_PASSWORD=USER[1],
                   SSMIX_PROGRESS_SECONDS="3600", RAY_USAGE_STATS_ENABLED="0")
        started = time.perf_counter()
        drivers = [subprocess.Popen([sys.executable, "-m", "ssmix", "sweep", "run", "--in-process", str(path)],
                                    cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                   for _ in range(2)]
        outs = [d.communicate()[0] for d in drivers]
        wall = time.perf_counter() - started
        for i, out in enumerate(outs):
            (root / f"driver{i}.log").write_text(out)
        codes = [d.returncode for d in drivers]
        sweep = load_sweep(path)
        store = ResultStore.for_sweep(sweep)
        cells = plan_cells(sweep)
        attempts = [len(store.attempts(c.id)) for c in cells]

        from mlflow.tracking import MlflowClient

        os.environ.update(MLFLOW_TRACKING_USERNAME=USER[0], MLFLOW_TRACKING_PASSWORD=USER[1])
        from ssmix.tracking.runs import search_cell_runs

        client = MlflowClient(tracking_uri=url)
        runs = search_cell_runs(client, client.get_experiment_by_name(sweep.name).experiment_id)
    # Which driver trained a cell: in process, the attempt's pid is the driver's; its timing line
    # counts the same cells, and gives its time in MLflow per cell it trained.
    trained_by = [sum(line.endswith(f"pid {d.pid}") for c in cells for line in store.attempts(c.id)) for d in drivers]
    per_driver = []
    for out, trained in zip(outs, trained_by):
        seen = re.search(r"(\d+) trials: ", out)
        mlflow = re.search(r"MLflow on the driver ([\d.]+) s per cell", out)
        seconds = float(mlflow.group(1)) * int(seen.group(1)) if mlflow and seen else None
        per_driver.append({"trained": trained, "timing_line_trained": int(seen.group(1)) if seen else 0,
                           "mlflow_seconds": seconds})
    runs_per_cell = {}
    for run in runs:
        runs_per_cell[run.data.tags["ssmix.cell"]] = runs_per_cell.get(run.data.tags["ssmix.cell"], 0) + 1
    figures = {"cells": len(cells), "wall_seconds": round(wall, 1), "exit_codes": codes, "drivers": per_driver,
               "cells_trained_once": sum(a == 1 for a in attempts),
               "cells_trained_twice_or_more": sum(a > 1 for a in attempts),
               "runs": len(runs), "cells_with_one_run": sum(n == 1 for n in runs_per_cell.values()),
               "running": sum(r.info.status == "RUNNING" for r in runs),
               "finished": sum(r.info.status == "FINISHED" for r in runs)}
    print(f"[mlflow-load] {json.dumps(figures)}")
    ok = (codes == [0, 0] and figures["cells_trained_once"] == len(cells) and figures["runs"] == len(cells)
          and figures["cells_with_one_run"] == len(cells) and figures["running"] == 0
          and all(d["trained"] == d["timing_line_trained"] for d in per_driver))
    total = sum(d["mlflow_seconds"] or 0 for d in per_driver)
    shown = ", ".join(f"driver {i}: trained {d['trained']} cells, {d['mlflow_seconds']:.0f} s in MLflow"
                      for i, d in enumerate(per_driver) if d["mlflow_seconds"] is not None)
    figures["mlflow_seconds_per_cell"] = round(total / len(cells), 2)
    print(f"{len(cells)} cells, two drivers, MLflow on PostgreSQL: each cell once, one run each, 0 RUNNING, "
          f"each driver's timing line counting its own cells: "
          f"{'yes' if ok else 'NO'}; {shown}; {total / len(cells):.2f} s in MLflow per cell of the sweep")
    (root / "mlflow_load.json").write_text(json.dumps(figures, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
