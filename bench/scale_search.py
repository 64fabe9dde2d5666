"""A search of hundreds of trials: what each proposal costs the driver, early and late.

    python bench/scale_search.py [--trials 300] [--out DIR]

A TPE search of 300 proposals on one (task, method): TREC-coarse x SSMix, phase 2's learning rate
and λ0, the tiny BERT on 8 real training questions from ../shared/data, through `ssmix sweep run
--in-process` (one cell at a time, so the driver's time per proposal is the gap between one
trial's end and the next one's start, as the trials' own timing records them). Prints that time
for the first 50 and the last 50 proposals, their ratio, and how long `ssmix sweep best` takes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.cell_overhead import tiny_model  # noqa: E402
from ssmix.sweep import ResultStore, load_sweep, plan_cells  # noqa: E402

SHARED_DATA = REPO.parent / "shared" / "data"


def search_file(root: Path, trials: int, model: str) -> Path:
    sweep = {"name": f"search-{trials}", "model": model, "tasks": ["trec-coarse"], "methods": ["ssmix"],
             "data_dir": str(SHARED_DATA), "storage_path": str(root / "storage"),
             "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
             "trial": {"batch_size": 4, "eval_every": 2, "max_train_examples": 8, "max_eval_examples": 8,
                       "phase1": {"epochs": 1, "lr": 5e-4}, "phase2": {"epochs": 1}},
             "search": {"algorithm": "tpe", "trials": trials, "seed": 0, "max_concurrent": 2, "startup_trials": 10,
                        "selection": "dev-split",
                        "space": {"phase2.lr": {"distribution": "loguniform", "low": 1e-5, "high": 1e-3},
                                  "mix_ratio": {"distribution": "uniform", "low": 0.1, "high": 0.5}}}}
    path = root / "search.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def driver_gaps(path: Path) -> list[float]:
    """Seconds between a proposal's trial's end and the next one's start, in proposal order."""
    sweep = load_sweep(path)
    store = ResultStore.for_sweep(sweep)
    timings = sorted((r.timing for c in plan_cells(sweep, store=store) if c.is_proposal
                      and (r := store.finished(c.id)) is not None and r.timing is not None),
                     key=lambda t: t.started_at)
    return [after.started_at - before.finished_at for before, after in zip(timings, timings[1:])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="ssmix-search-"))
    root.mkdir(parents=True, exist_ok=True)
    path = search_file(root, args.trials, tiny_model(root / "model"))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ssmix", "sweep", "run", "--in-process", str(path)], cwd=root,
                          capture_output=True, text=True, env=dict(os.environ, SSMIX_PROGRESS_SECONDS="3600"))
    wall = time.perf_counter() - started
    (root / "search.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"the search exited {done.returncode}: {root / 'search.log'}\n{done.stdout[-3000:]}")
    gaps = driver_gaps(path)
    window = min(50, len(gaps) // 2)
    first, last = statistics.mean(gaps[:window]), statistics.mean(gaps[-window:])
    started = time.perf_counter()
    best = subprocess.run([sys.executable, "-m", "ssmix", "sweep", "best", str(path)], cwd=root, capture_output=True)
    best_seconds = time.perf_counter() - started
    if best.returncode != 0:
        raise SystemExit(f"`ssmix sweep best` exited {best.returncode}:\n{best.stdout.decode()[-3000:]}")
    figures = {"proposals": len(gaps) + 1, "wall_seconds": round(wall, 1), "driver_seconds_first": round(first, 3),
               "driver_seconds_last": round(last, 3), "ratio": round(last / first, 2),
               "sweep_best_seconds": round(best_seconds, 2)}
    print(f"[search] {json.dumps(figures)}")
    print(f"TPE, {len(gaps) + 1} proposals: driver time per proposal {first:.3f} s (first {window}) -> {last:.3f} s "
          f"(last {window}), x{last / first:.2f} (goal <= 1.5): {'met' if last / first <= 1.5 else 'NOT met'}; "
          f"`ssmix sweep best` over them: {best_seconds:.2f} s")
    (root / "search.json").write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
