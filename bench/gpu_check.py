"""The GPU check: everything the service needs to know about one GPU, measured in one call.

    python3 bench/gpu_check.py --out OUT                  # on the GPU machine (about 5 minutes on an H200)
    python3 bench/gpu_check.py --device cpu --tiny --out OUT   # the same figures, tiny, on CPU (a test)

Writes OUT/gpu_check.json and OUT/gpu_check.md: the chip's dense matmul rate; per batch shape,
precision and method the median step time, tokens/s, model FLOPs utilisation and peak memory;
whether a step waits on the host; whether the mixers give the same spans on the device and on
CPU; k trial processes sharing one card; and what TF32, fused AdamW, pinned copies, padding to
multiples of 8 and torch.compile change. Every section runs on its own: one that fails is
recorded with its error, and the others still run.

It needs torch, transformers and numpy (the device image has them) and this project's source; the
one other package the library needs, pydantic, is installed from wheels in ``bench/wheels`` when
it is missing (``bench/wheels/README.md`` says how to fill that folder).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _ensure_imports() -> None:
    sys.path.insert(0, str(REPO))
    try:
        import pydantic  # noqa: F401
    except ImportError:
        target = Path(os.environ.get("TMPDIR", "/tmp")) / "ssmix-gpu-check-deps"
        wheels = sorted(str(p) for p in (REPO / "bench" / "wheels").glob("*.whl"))
        if not wheels:
            raise SystemExit("pydantic is missing and bench/wheels holds no wheels: see bench/wheels/README.md") from None
        import zipfile

        for wheel in wheels:   # a wheel is a zip of its installed files: unpacking it installs it
            zipfile.ZipFile(wheel).extractall(target)
        sys.path.insert(0, str(target))


_ensure_imports()

import torch  # noqa: E402

from ssmix import mixing  # noqa: E402
from ssmix.bench import random_batch  # noqa: E402
from ssmix.methods import METHODS  # noqa: E402
from ssmix.step import MixupSettings, partner_rows, train_step  # noqa: E402

BERT_BASE = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, max_position_embeddings=512)
TINY = dict(vocab_size=2000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=37, max_position_embeddings=512)


def build(shape: dict, device: str, fused: bool = False):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(num_labels=6, **shape)).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=fused or None)
    return model, optimizer


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# As a trial sets them: single texts, the tokenizer's [UNK]; the mixers' draws on the device and
# the host's (λ', TMix's layer) on a CPU generator.
SETTINGS = MixupSettings(unk_token_id=100, num_segments=1)


def generators(device: str) -> tuple[torch.Generator, torch.Generator]:
    return torch.Generator(device=device).manual_seed(0), torch.Generator().manual_seed(0)


def time_steps(model, optimizer, batch, labels, method: str, device: str, steps: int, warmup: int,
               amp=None) -> list[float]:
    generator, host = generators(device)
    times = []
    for i in range(warmup + steps):
        sync(device)
        started = time.perf_counter()
        train_step(model, optimizer, batch, labels, method, SETTINGS, generator, autocast_dtype=amp,
                   host_generator=host)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - started)
    return times


def peak_rate(device: str, tiny: bool) -> dict:
    """Dense matmul TFLOP/s in bf16 (and fp32, fp32 with TF32): the denominator of MFU."""
    n = 1024 if tiny else 8192
    out = {}
    for name, dtype, tf32 in (("bf16", torch.bfloat16, False), ("fp32", torch.float32, False),
                              ("tf32", torch.float32, True)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(3):
            a @ b
        sync(device)
        repeats = 3 if tiny else 20
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        sync(device)
        out[name] = 2 * n ** 3 * repeats / (time.perf_counter() - started) / 1e12
    torch.backends.cuda.matmul.allow_tf32 = False
    return out


def step_figures(device: str, shape: dict, shapes: list[tuple[int, int]], steps: int, warmup: int,
                 peak: dict) -> list[dict]:
    model, optimizer = build(shape, device)
    params = sum(p.numel() for p in model.parameters())
    rows = []
    for batch_size, length in shapes:
        generator = torch.Generator().manual_seed(0)
        batch = random_batch(batch_size, length - 2, length - 2, shape["vocab_size"], generator, device)
        labels = torch.randint(0, 6, (batch_size,), generator=generator).to(device)
        for precision, amp in (("fp32", None), ("bf16", torch.bfloat16)):
            for method in METHODS:
                if device.startswith("cuda"):
                    torch.cuda.reset_peak_memory_stats()
                median = statistics.median(time_steps(model, optimizer, batch, labels, method, device, steps,
                                                      warmup, amp))
                tokens = batch_size * length
                # Model FLOPs of one plain step (6 per parameter per token): the same numerator for
                # every method, so a method's extra work shows as a lower MFU.
                flops = 6 * params * tokens / median
                rows.append({"batch": batch_size, "length": length, "precision": precision, "method": method,
                             "median_ms": 1000 * median, "tokens_per_s": tokens / median,
                             "mfu": flops / 1e12 / peak["bf16" if amp else "tf32" if device != "cpu" else "fp32"],
                             "peak_memory_mb": (torch.cuda.max_memory_allocated() / 2 ** 20
                                                if device.startswith("cuda") else None)})
    for row in rows:
        same = {r["method"]: r["median_ms"] for r in rows
                if (r["batch"], r["length"], r["precision"]) == (row["batch"], row["length"], row["precision"])}
        row["vs_none"], row["vs_embedmix"] = row["median_ms"] / same["none"], row["median_ms"] / same["embedmix"]
    return rows


def host_sync(device: str, shape: dict) -> dict:
    """Which steps wait on the host: one step of each method under CUDA's sync debug mode
    ("warn": each synchronising call warns), counted, with where each was made (the innermost
    frame outside torch: ours, or the model's). On CPU there is no device to wait for."""
    if not device.startswith("cuda"):
        return {"checked": False, "why": "CPU: no device/host synchronisation to detect"}
    model, optimizer = build(shape, device)
    generator = torch.Generator().manual_seed(0)
    batch = random_batch(16, 40, 60, shape["vocab_size"], generator, device)
    labels = torch.randint(0, 6, (16,), generator=generator).to(device)
    out = {"checked": True, "methods": {}}
    for method in METHODS:
        time_steps(model, optimizer, batch, labels, method, device, 1, 1)      # warm, outside the check
        seen: list[str] = []

        def record(message, category, filename, lineno, file=None, line=None, seen=seen):
            outside = [f for f in traceback.extract_stack()[:-1]
                       if "/torch/" not in f.filename and "warnings" not in f.filename]
            where = outside[-1] if outside else None
            seen.append(f"{Path(where.filename).name}:{where.lineno}" if where else "torch")

        step_generator, host = generators(device)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = record
            torch.cuda.set_sync_debug_mode("warn")
            try:
                train_step(model, optimizer, batch, labels, method, SETTINGS, step_generator, host_generator=host)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        out["methods"][method] = {"synchronisations": len(seen), "where": dict(Counter(seen))}
    out["none_in_the_step"] = all(m["synchronisations"] == 0 for m in out["methods"].values())
    return out


def mixers_agree(device: str) -> dict:
    """The SSMix mixer on the device and on CPU, same batch and saliency: same spans and λ."""
    generator = torch.Generator().manual_seed(1)
    cpu = random_batch(32, 8, 60, 30522, generator, "cpu")
    saliency = torch.rand(cpu["input_ids"].shape, generator=generator)
    partner = partner_rows(16, "cpu")
    pair = {k: v[:32] for k, v in cpu.items()}
    results = {}
    for where in ("cpu", device):
        a = {k: v.to(where) for k, v in pair.items()}
        b = {k: v[partner.to(where) if where != "cpu" else partner] for k, v in a.items()}
        s = saliency.to(where)
        results[where] = mixing.ssmix(a, b, s, s[partner.to(where)], 0.1, num_segments=1)
    first, second = results["cpu"], results[device]
    fields = [f for f in vars(first) if isinstance(getattr(first, f), torch.Tensor)]
    same = {f: bool(torch.equal(getattr(first, f).cpu(), getattr(second, f).cpu())) for f in fields}
    return {"device": device, "fields": same, "all_equal": all(same.values())}


def sharing(device: str, tiny: bool, ks: list[int], steps: int) -> list[dict]:
    """k trial processes on one card at once (Ray's gpu: 1/k), each ``steps`` SSMix steps of a
    small task's shape (batch 32, 64 tokens): total steps/s and each process's peak memory."""
    rows = []
    for k in ks:
        started = time.perf_counter()
        workers = [subprocess.Popen([sys.executable, __file__, "--worker", "--device", device, "--steps", str(steps)]
                                    + (["--tiny"] if tiny else []), stdout=subprocess.PIPE, text=True)
                   for _ in range(k)]
        reports = [json.loads(w.communicate()[0].strip().splitlines()[-1]) for w in workers]
        wall = time.perf_counter() - started
        rows.append({"k": k, "steps_per_s": k * steps / max(r["seconds"] for r in reports),
                     "wall_s_with_start": wall, "peak_memory_mb": [r["peak_memory_mb"] for r in reports]})
    base = rows[0]["steps_per_s"]
    for row in rows:
        row["vs_k1"] = row["steps_per_s"] / base
    return rows


def worker(args) -> None:
    shape = TINY if args.tiny else BERT_BASE
    model, optimizer = build(shape, args.device)
    generator = torch.Generator().manual_seed(0)
    batch = random_batch(32, 50, 62, shape["vocab_size"], generator, args.device)
    labels = torch.randint(0, 6, (32,), generator=generator).to(args.device)
    time_steps(model, optimizer, batch, labels, "ssmix", args.device, 1, 2)
    seconds = sum(time_steps(model, optimizer, batch, labels, "ssmix", args.device, args.steps, 0))
    memory = torch.cuda.max_memory_allocated() / 2 ** 20 if args.device.startswith("cuda") else None
    print(json.dumps({"seconds": seconds, "peak_memory_mb": memory}))


def toggles(device: str, shape: dict, steps: int, warmup: int, size: int, length: int) -> dict:
    """What pays: each setting on and off, SSMix steps of batch ``size`` x ``length`` (a multiple of 8)."""
    generator = torch.Generator().manual_seed(0)
    batch = random_batch(size, length - 2, length - 2, shape["vocab_size"], generator, "cpu")
    labels = torch.randint(0, 6, (size,), generator=generator)
    on_device = {k: v.to(device) for k, v in batch.items()}
    out = {}

    def median_ms(model, optimizer, b=on_device, amp=None) -> float:
        return 1000 * statistics.median(time_steps(model, optimizer, b, labels.to(device), "ssmix", device, steps,
                                                   warmup, amp))

    for tf32 in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        out[f"fp32 tf32={tf32}"] = median_ms(*build(shape, device))
    torch.backends.cuda.matmul.allow_tf32 = False
    for fused in (False, True):
        out[f"bf16 fused AdamW={fused}"] = median_ms(*build(shape, device, fused=fused), amp=torch.bfloat16)
    copies = {}
    for pinned in (False, True):
        host = {k: (v.pin_memory() if pinned and device.startswith("cuda") else v) for k, v in batch.items()}
        sync(device)
        started = time.perf_counter()
        for _ in range(20):
            {k: v.to(device, non_blocking=pinned) for k, v in host.items()}
        sync(device)
        copies[f"pinned={pinned}"] = 1000 * (time.perf_counter() - started) / 20
    out["batch copy ms"] = copies
    odd = random_batch(size, length - 5, length - 5, shape["vocab_size"], torch.Generator().manual_seed(0), device)
    model, optimizer = build(shape, device)
    out[f"bf16 length {length - 3}"] = median_ms(model, optimizer, odd, torch.bfloat16)
    out[f"bf16 length {length} (multiple of 8)"] = median_ms(model, optimizer, on_device, torch.bfloat16)
    out["compile"] = compiled(device, shape, steps, warmup, size, length)
    return out


def compiled(device: str, shape: dict, steps: int, warmup: int, size: int, length: int) -> dict:
    """torch.compile of the encoder: compile time, step time, and recompiles as the padded length
    changes from batch to batch (dynamic padding)."""
    import torch._dynamo

    torch._dynamo.reset()
    model, optimizer = build(shape, device)
    model.bert = torch.compile(model.bert, dynamic=None, backend="inductor" if device.startswith("cuda") else "eager")
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 6, (size,), generator=generator).to(device)
    started = time.perf_counter()
    first = random_batch(size, length - 2, length - 2, shape["vocab_size"], generator, device)
    time_steps(model, optimizer, first, labels, "none", device, 1, 0, torch.bfloat16)
    compile_s = time.perf_counter() - started
    plain = statistics.median(time_steps(model, optimizer, first, labels, "none", device, steps, warmup, torch.bfloat16))
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    for padded in (0.3, 0.45, 0.7, 0.8, 1.0):      # five padded lengths, as dynamic padding makes them
        words = max(1, int(padded * (length - 2)))
        batch = random_batch(size, words, words, shape["vocab_size"], generator, device)
        time_steps(model, optimizer, batch, labels, "none", device, 1, 0, torch.bfloat16)
    return {"compile_s": compile_s, "step_ms": 1000 * plain,
            "graphs_added_over_5_lengths": torch._dynamo.utils.counters["stats"]["unique_graphs"] - before}


SECTIONS = ("peak", "steps", "host_sync", "mixers", "sharing", "toggles")


def run(args) -> dict:
    device, tiny = args.device, args.tiny
    shape = TINY if tiny else BERT_BASE
    steps, warmup = (2, 1) if tiny else (20, 5)
    report: dict = {"device": device, "name": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
                    "torch": torch.__version__, "model": "tiny BERT" if tiny else "BERT-base shape, random weights",
                    "errors": {}}
    calls = {"peak": lambda: peak_rate(device, tiny),
             "steps": lambda: step_figures(device, shape, [(8, 32)] if tiny else [(32, 128), (64, 128)], steps,
                                           warmup, report["peak"]),
             "host_sync": lambda: host_sync(device, shape),
             "mixers": lambda: mixers_agree(device if device.startswith("cuda") else "cpu"),
             "sharing": lambda: sharing(device, tiny, [1, 2] if tiny else [1, 2, 4, 8],
                                        3 if tiny else 100),
             "toggles": lambda: toggles(device, shape, steps, warmup, *((8, 32) if tiny else (32, 128)))}
    for name in SECTIONS:
        started = time.perf_counter()
        try:
            report[name] = calls[name]()
        except Exception as err:   # one section's failure must not cost the others
            report["errors"][name] = f"{type(err).__name__}: {err}"[:2000]
        report.setdefault("seconds", {})[name] = time.perf_counter() - started
        print(f"[gpu check] {name}: {report['seconds'][name]:.1f} s", flush=True)
    return report


def markdown(report: dict) -> str:
    lines = [f"# GPU check: {report['name']} ({report['device']}, torch {report['torch']}, {report['model']})", ""]
    if "peak" in report:
        lines += ["Dense matmul: " + ", ".join(f"{k} {v:.1f} TFLOP/s" for k, v in report["peak"].items()), ""]
    if "steps" in report:
        lines += ["| batch × length | precision | method | ms/step | tokens/s | MFU | peak MB | vs none | vs embedmix |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in report["steps"]:
            memory = "–" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}"
            lines.append(f"| {r['batch']} × {r['length']} | {r['precision']} | {r['method']} | {r['median_ms']:.1f} | "
                         f"{r['tokens_per_s']:.0f} | {100 * r['mfu']:.1f}% | {memory} | {r['vs_none']:.2f} | "
                         f"{r['vs_embedmix']:.2f} |")
        lines.append("")
    for name in ("host_sync", "mixers", "toggles"):
        if name in report:
            lines += [f"## {name}", "", "```", json.dumps(report[name], indent=2), "```", ""]
    if "sharing" in report:
        lines += ["## one card shared by k trial processes (SSMix, batch 32 × 64)", "",
                  "| k | steps/s in all | vs k = 1 | peak MB per process |", "|---:|---:|---:|---|"]
        for r in report["sharing"]:
            memory = ", ".join("–" if m is None else f"{m:.0f}" for m in r["peak_memory_mb"])
            lines.append(f"| {r['k']} | {r['steps_per_s']:.1f} | {r['vs_k1']:.2f} | {memory} |")
        lines.append("")
    for name, error in report["errors"].items():
        lines.append(f"**{name} failed**: {error}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu-check")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="a tiny model and a few steps (the CPU test)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=100, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = run(args)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
