"""How a sweep's costs grow with its size: the same tiny-model sweep at 100, 300 and 1,000 cells,
through `ssmix sweep run` as a user runs it.

    python bench/scale.py [--cells 100 300 1000] [--runners ray in-process] [--out DIR]

Each sweep: a 2-layer BERT of hidden size 32 (built here) on real TREC-coarse questions from
../shared/data (8 training and 8 evaluation examples per cell: a couple of steps per phase), seeds
x (phase 1, SSMix, EmbedMix, TMix, [UNK]) = 5 cells per seed, 2 trials at a time on local Ray.
Per size: the wall time, the time inside trials, the seconds each cell cost outside its training
(the trial's own load and checkpoint time, Tune's start of the trial, MLflow on the driver, the
rest: Ray and Tune), the driver's peak RSS, what MLflow and the storage hold. Prints a table,
writes ``scale.json`` and draws cost against size (log-log) into docs/images/scale.png.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.cell_overhead import tiny_model  # noqa: E402

SHARED_DATA = REPO.parent / "shared" / "data"
METHODS = ["none", "ssmix", "embedmix", "tmix", "unk"]     # phase 1 and four phase-2 methods per seed


@dataclass
class Measured:
    runner: str
    cells: int
    wall_seconds: float
    inside_trials_seconds: float
    trial_other_per_cell: float       # inside the trial, outside steps and evaluation: loading, checkpoints
    outside_per_cell: float           # slot-seconds per cell outside its trial (the sweep's timing line)
    worker_start_per_cell: float | None
    mlflow_per_cell: float | None
    driver_peak_rss_mb: float
    mlflow_bytes: int
    storage_bytes: int

    @property
    def overhead_per_cell(self) -> float:
        """Outside training: the trial's own overhead and the slot-seconds outside the trial."""
        return self.trial_other_per_cell + self.outside_per_cell


def sweep_file(root: Path, cells: int, model: str) -> Path:
    seeds = cells // len(METHODS)
    sweep = {"name": f"scale-{cells}", "model": model, "tasks": ["trec-coarse"], "methods": METHODS,
             "seeds": list(range(seeds)), "data_dir": str(SHARED_DATA),
             "storage_path": str(root / "storage"), "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
             "resources": {"cpu": 1},
             "trial": {"batch_size": 4, "eval_every": 2, "max_train_examples": 8, "max_eval_examples": 8,
                       "selection": "dev-split", "phase1": {"epochs": 1, "lr": 5e-4},
                       "phase2": {"epochs": 1, "lr": 1e-4}}}
    path = root / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def peak_rss_mb(pid: int, peak: list[float], process: subprocess.Popen) -> None:
    """The process's peak RSS (the kernel's VmHWM), read until it exits."""
    while process.poll() is None:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            break
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak[0] = max(peak[0], int(line.split()[1]) / 1024)
        time.sleep(0.5)


def number(pattern: str, text: str) -> float | None:
    found = re.search(pattern, text)
    return float(found.group(1)) if found else None


def run_sweep(root: Path, cells: int, runner: str, model: str) -> Measured:
    root.mkdir(parents=True, exist_ok=True)
    path = sweep_file(root, cells, model)
    command = [sys.executable, "-m", "ssmix", "sweep", "run", str(path)]
    command += ["--in-process"] if runner == "in-process" else []
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", SSMIX_PROGRESS_SECONDS="3600")
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=root,
                               env=env, start_new_session=True)
    peak = [0.0]
    sampler = threading.Thread(target=peak_rss_mb, args=(process.pid, peak, process), daemon=True)
    sampler.start()
    out = process.communicate()[0]
    wall = time.perf_counter() - started
    sampler.join()
    (root / "sweep.log").write_text(out)
    if process.returncode != 0:
        raise SystemExit(f"{runner} sweep of {cells} cells exited {process.returncode}; its log: {root / 'sweep.log'}\n"
                         + out[-3000:])
    trials = int(number(r"(\d+) trials: ", out))
    inside = number(r"trials: ([\d.]+) s inside trials", out)
    other = number(r"\+ ([\d.]+) s other", out)
    outside = number(r"s outside trials, ([\d.]+) s per cell", out)
    mlflow_bytes = (root / "mlflow.db").stat().st_size + sum(
        p.stat().st_size for p in (root / "mlartifacts").rglob("*") if p.is_file())
    storage = sum(p.stat().st_size for p in (root / "storage").rglob("*") if p.is_file())
    return Measured(runner, trials, round(wall, 1), inside, round(other / trials, 3), outside,
                    number(r"trial's first line ([\d.]+)", out), number(r"MLflow on the driver ([\d.]+)", out),
                    round(peak[0]), mlflow_bytes, storage)


def table(rows: list[Measured]) -> str:
    lines = ["| runner | cells | wall s | outside training s/cell | trial load+ckpt s/cell | outside trial s/cell "
             "| worker start s/cell | MLflow s/cell | driver peak RSS MB | MLflow store MB | storage MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        shown = [r.runner, r.cells, f"{r.wall_seconds:.0f}", f"{r.overhead_per_cell:.2f}", f"{r.trial_other_per_cell:.2f}",
                 f"{r.outside_per_cell:.2f}", "-" if r.worker_start_per_cell is None else f"{r.worker_start_per_cell:.2f}",
                 "-" if r.mlflow_per_cell is None else f"{r.mlflow_per_cell:.2f}", f"{r.driver_peak_rss_mb:.0f}",
                 f"{r.mlflow_bytes / 1e6:.1f}", f"{r.storage_bytes / 1e6:.1f}"]
        lines.append("| " + " | ".join(map(str, shown)) + " |")
    return "\n".join(lines)


def goals(rows: list[Measured]) -> list[str]:
    """The issue's goals, each with what was measured."""
    said = []
    ray = sorted((r for r in rows if r.runner == "ray"), key=lambda r: r.cells)
    if len(ray) >= 2:
        first, last = ray[0], ray[-1]
        ratio = last.overhead_per_cell / first.overhead_per_cell
        said.append(f"overhead outside training per cell, {first.cells} -> {last.cells} cells: "
                    f"{first.overhead_per_cell:.2f} -> {last.overhead_per_cell:.2f} s (x{ratio:.2f}; goal <= 1.0 s "
                    f"and x<=1.2): {'met' if last.overhead_per_cell <= 1.0 and ratio <= 1.2 else 'NOT met'}")
        growth = last.driver_peak_rss_mb - first.driver_peak_rss_mb
        said.append(f"driver peak RSS {first.cells} -> {last.cells} cells: {first.driver_peak_rss_mb:.0f} -> "
                    f"{last.driver_peak_rss_mb:.0f} MB ({growth:+.0f} MB; goal <= +150): "
                    f"{'met' if growth <= 150 else 'NOT met'}")
    return said


def draw(rows: list[Measured], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain = FuncFormatter(lambda value, _: f"{value:g}")
    sparse = FuncFormatter(lambda value, _: f"{value:g}" if f"{value:g}".lstrip("0.")[:1] in "25" else "")
    fig, (cost, memory) = plt.subplots(1, 2, figsize=(11, 4.6))
    for runner, style in (("ray", "o-"), ("in-process", "s--")):
        mine = sorted((r for r in rows if r.runner == runner), key=lambda r: r.cells)
        if not mine:
            continue
        n = [r.cells for r in mine]
        cost.plot(n, [r.overhead_per_cell for r in mine], style, label=f"{runner}: all outside training")
        if runner == "ray":
            cost.plot(n, [r.mlflow_per_cell or 0 for r in mine], ":", label="ray: MLflow on the driver")
            cost.plot(n, [r.worker_start_per_cell or 0 for r in mine], ":", label="ray: Tune's trial start")
        memory.plot(n, [r.driver_peak_rss_mb for r in mine], style, label=f"{runner}: driver peak RSS")
    ray = sorted((r for r in rows if r.runner == "ray"), key=lambda r: r.cells)
    if ray:
        memory.axhline(ray[0].driver_peak_rss_mb + 150, color="grey", linestyle=":",
                       label=f"goal: at most {ray[0].cells}-cell peak + 150 MB")
        cost.axhline(1.0, color="grey", linestyle=":", label="goal: at most 1 s")
    cost.set_yscale("log")                      # cost against size, log-log
    memory.set_ylim(0, max(r.driver_peak_rss_mb for r in rows) * 1.25)
    for axis, title, unit in ((cost, "cost per cell outside training (log-log)", "seconds per cell"),
                              (memory, "the driver's memory", "MB")):
        axis.set_xscale("log")
        axis.set_xticks(sorted({r.cells for r in rows}))
        axis.xaxis.set_major_formatter(plain)
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel("cells in the sweep")
        axis.set_ylabel(unit)
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    cost.yaxis.set_major_formatter(plain)
    cost.yaxis.set_minor_formatter(sparse)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--runners", nargs="+", default=["ray", "in-process"], choices=["ray", "in-process"])
    parser.add_argument("--out", default=None, help="keep the sweeps here (default: a temporary folder)")
    parser.add_argument("--figure", default=str(REPO / "docs" / "images" / "scale.png"))
    parser.add_argument("--redraw", metavar="SCALE_JSON", help="print and draw the figures of an earlier run only")
    args = parser.parse_args()
    if args.redraw:
        rows = [Measured(**r) for r in json.loads(Path(args.redraw).read_text())]
        print(table(rows), *goals(rows), sep="\n")
        draw(rows, Path(args.figure))
        return 0
    root = Path(args.out or tempfile.mkdtemp(prefix="ssmix-scale-"))
    model = tiny_model(root / "model")
    rows = []
    for cells in args.cells:
        for runner in args.runners:
            measured = run_sweep(root / f"{runner}-{cells}", cells, runner, model)
            rows.append(measured)
            print(f"[scale] {runner}, {cells} cells: {json.dumps(asdict(measured))}", flush=True)
    print(table(rows))
    for line in goals(rows):
        print(line)
    (root / "scale.json").write_text(json.dumps([asdict(r) for r in rows], indent=2))
    draw(rows, Path(args.figure))
    print(f"figure: {args.figure}; figures: {root / 'scale.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
