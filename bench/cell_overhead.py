"""Where a cell's seconds go outside its training: a sweep of many tiny cells (a 2-layer BERT of
hidden size 32, built here, on a made-up TREC-shaped task), run through `ssmix sweep run` as a
user runs it, and the sweep's own timing lines, per cell.

    python bench/cell_overhead.py [--seeds 40] [--out DIR]

40 seeds x (phase 1, SSMix, EmbedMix) = 120 cells. Prints what the sweep printed about time,
the per-cell split, the storage the sweep left and the driver's peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import QUESTIONS, WORDS, tiny_bert, write_jsonl  # noqa: E402


def tiny_model(root: Path) -> str:
    from transformers import AutoTokenizer

    vocab = root / "vocab"
    vocab.mkdir(parents=True)
    (vocab / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "?", ".", ","] + WORDS) + "\n")
    (vocab / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer", "do_lower_case": true}')
    model = root / "tiny-bert"
    tiny_bert(num_labels=6).save_pretrained(model)
    AutoTokenizer.from_pretrained(str(vocab)).save_pretrained(model)
    return str(model)


def sample_workers(process: subprocess.Popen, workers: dict[int, list[float]]) -> None:
    """RSS of the sweep's trial workers (the processes of Tune's function-trainable actors) until
    the sweep ends."""
    while process.poll() is None:
        for entry in Path("/proc").iterdir():
            try:
                if not entry.name.isdigit() or os.getsid(int(entry.name)) != process.pid:
                    continue
                if not (entry / "cmdline").read_bytes().startswith(b"ray::ImplicitFunc"):   # Tune's trial actor
                    continue
                rss_kb = next(int(line.split()[1]) for line in (entry / "status").read_text().splitlines()
                              if line.startswith("VmRSS:"))
            except (OSError, StopIteration, ValueError):
                continue
            workers.setdefault(int(entry.name), []).append(rss_kb / 1024)
        time.sleep(1.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--out", default=None, help="keep the sweep's folder here (default: a temporary one)")
    parser.add_argument("--model", default=None, help="a real model instead of the tiny BERT (e.g. minilm): "
                        "each reused worker then loads it once per cell, which shows whether workers grow")
    args = parser.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="ssmix-overhead-"))
    root.mkdir(parents=True, exist_ok=True)
    data = root / "data"
    trec = [{"text": q, "coarse_label": c, "fine_label": c * 3} for q, c in QUESTIONS]
    write_jsonl(data / "trec" / "train.jsonl", trec * 2)
    write_jsonl(data / "trec" / "test.jsonl", trec[:6])
    sweep = {"name": "overhead", "model": args.model or tiny_model(root), "tasks": ["trec-coarse"],
             "methods": ["none", "ssmix", "embedmix"], "seeds": list(range(args.seeds)), "data_dir": str(data),
             "storage_path": str(root / "storage"), "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
             "resources": {"cpu": 1},
             "trial": {"batch_size": 8, "eval_every": 3, "phase1": {"epochs": 1, "lr": 5e-4},
                       "phase2": {"epochs": 1, "lr": 1e-4}}}
    path = root / "overhead.yaml"
    path.write_text(yaml.safe_dump(sweep))
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "ssmix", "sweep", "run", str(path)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, cwd=root, start_new_session=True)
    workers: dict[int, list[float]] = {}        # trial worker pid -> its RSS (MB), sampled every second
    sampler = threading.Thread(target=sample_workers, args=(process, workers), daemon=True)
    sampler.start()
    out = process.communicate()[0]
    wall = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if process.returncode != 0:
        print(out[-6000:])
        return process.returncode
    done = subprocess.CompletedProcess(process.args, 0, out, "")
    lines = done.stdout.splitlines()
    timing = [line for line in lines if "trials:" in line or "outside trials" in line]
    cells = 3 * args.seeds
    print(f"{cells} cells of {args.model or 'a tiny model'}, {wall:.1f} s for `ssmix sweep run` (this process's view)")
    print("\n".join(timing))
    storage = sum(p.stat().st_size for p in (root / "storage").rglob("*") if p.is_file())
    print(f"storage left: {storage / 1e6:.1f} MB; MLflow store {(root / 'mlflow.db').stat().st_size / 1e6:.1f} MB; "
          f"peak memory of the sweep's largest process: {peak_mb:.0f} MB")
    sampled = [rss for rss in workers.values() if len(rss) >= 10]
    growth = {}
    if sampled:
        first = sum(r[len(r) // 10] for r in sampled) / len(sampled)     # a tenth of the way in
        last = sum(r[-1] for r in sampled) / len(sampled)
        growth = {"workers": len(workers), "worker_rss_mb_early": round(first), "worker_rss_mb_last": round(last),
                  "worker_rss_mb_peak": round(max(max(r) for r in sampled))}
        print(f"{len(workers)} trial worker process(es) for {cells} cells; their memory a tenth of the way in "
              f"{first:.0f} MB, at the end {last:.0f} MB, peak {growth['worker_rss_mb_peak']} MB")
    print(json.dumps({"cells": cells, "wall_seconds": round(wall, 1), "storage_bytes": storage,
                      "peak_process_mb": round(peak_mb), **growth}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
