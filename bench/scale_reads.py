"""Reading many results: `ssmix sweep status`, the summaries, `ssmix sweep sync` and `ssmix report`
on a sweep of 5,000 finished cells.

    python bench/scale_reads.py [--cells 5000] [--out DIR]

SYNTHETIC RESULTS, for timing the reading paths only: the cells are a real plan (5 tasks x 200
seeds x phase 1 and four methods), but their results are drawn at random and written through the
store's own API (``ResultStore.write_result``), each with ten evaluations of history as a trained
cell has. No figure of this benchmark is an accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ssmix.outcome import EvalReport, FinetuneResult, PhaseResult  # noqa: E402
from ssmix.sweep import ResultStore, load_sweep, plan_cells  # noqa: E402
from ssmix.sweep.cells import CellResult, Timing  # noqa: E402
from ssmix.tasks import get_task  # noqa: E402

TASKS = ["trec-coarse", "sst2", "rte", "mrpc", "qnli"]
METHODS = ["none", "ssmix", "embedmix", "tmix", "unk"]


@dataclass
class ReadTimes:
    cells: int
    write_seconds: float
    status_seconds: float
    summaries_seconds: float
    sync_seconds: float
    sync_per_cell: float
    report_seconds: float
    mlflow_bytes: int
    storage_bytes: int
    status_s3_seconds: float | None = None    # the same cells on an S3 server on loopback


def sweep_file(root: Path, cells: int, storage: str | None = None) -> Path:
    seeds = cells // (len(TASKS) * len(METHODS))
    sweep = {"name": f"reads-{cells}", "model": "bert-base-uncased", "tasks": TASKS, "methods": METHODS,
             "seeds": list(range(seeds)), "storage_path": storage or str(root / "storage"),
             "tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "trial": {"phase1": {"epochs": 3}}}
    path = root / "reads.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def drawn_result(cell, rng: random.Random) -> CellResult:
    """A finished result drawn at random (synthetic), shaped as a trained cell's."""
    split = get_task(cell.task).eval_splits[0]
    history = []
    for n in range(1, 11):
        accuracy = {split: rng.uniform(0.5, 0.95)}
        history.append({k: v for k, v in asdict(EvalReport(
            phase=cell.kind, global_step=100 * n, phase_step=100 * n, epoch=n / 4, accuracy=accuracy,
            selection=accuracy[split], train_loss=rng.uniform(0.1, 1.0), examples_per_sec=500.0, is_best=False,
            checkpoint_dir="")).items() if k != "checkpoint_dir"})
    best = max(history, key=lambda h: h["selection"])
    phase = PhaseResult(cell.kind, cell.method, best["selection"], best["accuracy"], best["phase_step"], 1000,
                        history=history, train_seconds=100.0, eval_seconds=10.0)
    outcome = FinetuneResult(config=cell.trial, phase1=phase if cell.kind == "phase1" else None,
                             phase2=phase if cell.kind == "phase2" else None, best_selection=best["selection"],
                             best_accuracy=best["accuracy"], best_phase=cell.kind)
    now = time.time()
    return CellResult.finished(outcome, Timing(120.0, now - 120, now, 100.0, 10.0))


def timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return seconds


def measure(root: Path, cells: int) -> ReadTimes:
    root.mkdir(parents=True, exist_ok=True)
    path = sweep_file(root, cells)
    sweep = load_sweep(path)
    store = ResultStore.for_sweep(sweep)
    planned = plan_cells(sweep)
    rng = random.Random(0)
    started = time.perf_counter()
    for cell in planned:
        store.write_result(cell, drawn_result(cell, rng))
    write = time.perf_counter() - started
    python = [sys.executable, "-m", "ssmix"]
    status = timed(python + ["sweep", "status", str(path)], root)

    from ssmix.sweep.aggregate import Summaries

    started = time.perf_counter()
    rows = Summaries.from_store(plan_cells(sweep, store=store), store).rows()
    summaries = time.perf_counter() - started
    assert rows
    sync = timed(python + ["sweep", "sync", str(path)], root)
    report = timed(python + ["report", sweep.name, "--tracking-uri", sweep.tracking, "--out", str(root / "report")],
                   root)
    mlflow_bytes = (root / "mlflow.db").stat().st_size + sum(
        p.stat().st_size for p in (root / "mlartifacts").rglob("*") if p.is_file())
    storage = sum(p.stat().st_size for p in (root / "storage").rglob("*") if p.is_file())
    return ReadTimes(len(planned), round(write, 1), round(status, 2), round(summaries, 2), round(sync, 1),
                     round(sync / len(planned), 3), round(report, 2), mlflow_bytes, storage)


def status_on_s3(root: Path, cells: int) -> float:
    """`sweep status` of the same synthetic cells on S3 (moto's server on loopback, no proxy)."""
    import requests
    from moto.server import ThreadedMotoServer

    from tests.servers import free_port

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    try:
        os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench",
                          AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
        requests.put(f"http://127.0.0.1:{port}/reads", timeout=30).raise_for_status()
        root.mkdir(parents=True, exist_ok=True)
        path = sweep_file(root, cells, storage="s3://reads/bench")
        sweep = load_sweep(path)
        store = ResultStore.for_sweep(sweep)
        rng = random.Random(0)
        for cell in plan_cells(sweep):
            store.write_result(cell, drawn_result(cell, rng))
        seconds = timed([sys.executable, "-m", "ssmix", "sweep", "status", str(path)], root)
        # What status read before the store had snapshots: each cell's result and bytes, one by one.
        started = time.perf_counter()
        for cell in plan_cells(sweep):
            store.result(cell.id)
            store.cell_bytes(cell.id)
        print(f"[reads] on S3, each cell's result and bytes read one by one (status before snapshots): "
              f"{time.perf_counter() - started:.1f} s", flush=True)
        return seconds
    finally:
        moto.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=5000)
    parser.add_argument("--out", default=None)
    parser.add_argument("--no-s3", action="store_true", help="leave out `sweep status` on an S3 server")
    parser.add_argument("--s3-only", action="store_true", help="time `sweep status` on an S3 server only")
    args = parser.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="ssmix-reads-"))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if args.s3_only:
        seconds = status_on_s3(root / "s3", args.cells)
        print(f"`ssmix sweep status` on {args.cells} finished cells on S3 (moto on loopback): {seconds:.2f} s")
        return 0
    times = measure(root, args.cells)
    if not args.no_s3:
        times.status_s3_seconds = round(status_on_s3(root / "s3", args.cells), 2)
    print(f"[reads] SYNTHETIC results (random figures, for timing only): {json.dumps(asdict(times))}")
    print(f"`ssmix sweep status` on {times.cells} finished cells: {times.status_seconds:.2f} s (goal <= 3 s on disk): "
          f"{'met' if times.status_seconds <= 3 else 'NOT met'}")
    if times.status_s3_seconds is not None:
        print(f"`ssmix sweep status` on {times.cells} finished cells on S3 (moto on loopback): "
              f"{times.status_s3_seconds:.2f} s")
    print(f"`ssmix report` on {times.cells} cell runs (SQLite): {times.report_seconds:.2f} s (goal <= 20 s): "
          f"{'met' if times.report_seconds <= 20 else 'NOT met'}")
    (root / "reads.json").write_text(json.dumps(asdict(times), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
