"""Benchmarks. ``python -m ssmix.bench step`` (or ``ssmix bench step``) times one optimiser step of
every method in one process and prints each method's cost relative to ``none`` and ``embedmix``.

Methods are timed in interleaved rounds (one step of each method per round, same batch), so a
noisy shared machine slows all of them alike; the figure is the median over rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass

import torch

from ssmix import mixing
from ssmix.device import resolve_device
from ssmix.methods import METHODS
from ssmix.step import MixupSettings, partner_rows, train_step

SMALL_BERT = dict(vocab_size=30522, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                  intermediate_size=1024, max_position_embeddings=512)


@dataclass(frozen=True)
class StepCase:
    label: str
    method: str
    saliency: str = "free"


CASES = [StepCase(name, name) for name in METHODS] + [StepCase("ssmix (separate saliency)", "ssmix", "separate")]


def build_model(model_path: str | None, num_labels: int = 6):
    from transformers import BertConfig, BertForSequenceClassification

    if model_path:
        from ssmix.models import load_classifier

        return load_classifier(model_path, num_labels)
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(num_labels=num_labels, **SMALL_BERT))


def random_batch(batch_size: int, min_len: int, max_len: int, vocab_size: int, generator: torch.Generator,
                 device: str) -> dict[str, torch.Tensor]:
    """A dynamically padded single-sentence batch: [CLS] w1..wL [SEP] [PAD]..., L in [min, max]."""
    lengths = torch.randint(min_len, max_len + 1, (batch_size,), generator=generator)
    T = int(lengths.max()) + 2
    ids = torch.randint(1000, vocab_size, (batch_size, T), generator=generator)
    positions = torch.arange(T).view(1, T)
    attention = (positions < (lengths + 2).view(-1, 1)).long()
    special = ((positions == 0) | (positions == (lengths + 1).view(-1, 1)) | (attention == 0)).long()
    ids = torch.where(positions == 0, torch.full_like(ids, 101), ids)
    ids = torch.where(positions == (lengths + 1).view(-1, 1), torch.full_like(ids, 102), ids)
    ids = ids * attention
    batch = {"input_ids": ids, "attention_mask": attention, "special_tokens_mask": special,
             "token_type_ids": torch.zeros_like(ids)}
    return {k: v.to(device) for k, v in batch.items()}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_steps(args) -> dict:
    device = args.device
    model = build_model(args.model).to(device).train()
    vocab = model.config.vocab_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    generator = torch.Generator().manual_seed(0)
    batches = [random_batch(args.batch_size, args.min_len, args.max_len, vocab, generator, device)
               for _ in range(8)]
    labels = torch.randint(0, 6, (args.batch_size,), generator=generator).to(device)
    amp = torch.bfloat16 if args.bf16 else None
    mix_generator = torch.Generator(device=device).manual_seed(0)
    host_generator = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {case.label: [] for case in CASES}
    mixing_times: list[float] = []
    for round_index in range(args.warmup + args.repeats):
        batch = batches[round_index % len(batches)]
        for case in CASES:
            settings = MixupSettings(saliency=case.saliency, unk_token_id=100, num_segments=1)
            _sync(device)
            start = time.perf_counter()
            train_step(model, optimizer, batch, labels, case.method, settings, mix_generator, autocast_dtype=amp,
                       host_generator=host_generator)
            _sync(device)
            if round_index >= args.warmup:
                times[case.label].append(time.perf_counter() - start)
        # The mixing alone: span search and copy on the step's pair batch, no model.
        partner = partner_rows(args.batch_size // 2, device)
        pair = {k: v[: 2 * (args.batch_size // 2)] for k, v in batch.items()}
        other = {k: v[partner] for k, v in pair.items()}
        saliency = torch.rand(pair["input_ids"].shape, generator=mix_generator, device=device)
        _sync(device)
        start = time.perf_counter()
        mixing.ssmix(pair, other, saliency, saliency[partner], settings.mix_ratio, num_segments=1)
        _sync(device)
        if round_index >= args.warmup:
            mixing_times.append(time.perf_counter() - start)

    median = {label: statistics.median(values) for label, values in times.items()}
    rows = [{"method": label, "median_ms": 1000 * t, "vs_none": t / median["none"],
             "vs_embedmix": t / median["embedmix"]} for label, t in median.items()]
    mixing_ms = 1000 * statistics.median(mixing_times)
    return {
        "device": device, "model": args.model or "built-in BERT (hidden 256, 4 layers, vocab 30522)",
        "batch_size": args.batch_size, "lengths": [args.min_len, args.max_len], "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(), "bf16": bool(args.bf16), "steps": rows,
        "mixing_ms": mixing_ms, "mixing_share_of_ssmix_step": mixing_ms / (1000 * median["ssmix"]),
    }


def format_step_report(report: dict) -> str:
    lines = [f"one optimiser step, batch {report['batch_size']}, lengths {report['lengths'][0]}-"
             f"{report['lengths'][1]} tokens, {report['model']}, {report['device']}, "
             f"median of {report['repeats']} interleaved rounds",
             "",
             f"| {'method':<26} | {'ms/step':>8} | {'vs none':>7} | {'vs embedmix':>11} |",
             f"|{'-' * 28}|{'-' * 10}|{'-' * 9}|{'-' * 13}|"]
    for row in report["steps"]:
        lines.append(f"| {row['method']:<26} | {row['median_ms']:8.1f} | {row['vs_none']:7.2f} | "
                     f"{row['vs_embedmix']:11.2f} |")
    lines += ["", f"span search + copy alone: {report['mixing_ms']:.2f} ms = "
              f"{100 * report['mixing_share_of_ssmix_step']:.2f}% of an ssmix step"]
    return "\n".join(lines)


def run_step_benchmark(args) -> int:
    args.device = resolve_device(args.device)
    report = bench_steps(args)
    print(format_step_report(report))
    text = json.dumps(report, indent=2)
    if args.json:
        with open(args.json, "w") as handle:
            handle.write(text + "\n")
    print(text)
    return 0


# ------------------------------------------------------------------------- dynamic padding


def bench_padding(args) -> dict:
    """Training examples/s with dynamic padding vs fixed padding, same batches, same process."""
    import os

    from transformers import AutoTokenizer

    from ssmix.data import BatchCollator, load_task_data, rows_at
    from ssmix.models import load_classifier, resolve_model_path
    from ssmix.tasks import get_task

    data_dir = args.data_dir or os.environ.get("SSMIX_DATA_DIR") or "../shared/data"
    path = resolve_model_path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    results = []
    for task_name in args.tasks:
        task = get_task(task_name)
        data = load_task_data(task, tokenizer, data_dir=data_dir, max_eval_examples=1,
                              max_train_examples=args.batch_size * args.steps)
        model = load_classifier(path, task.num_labels).to(args.device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
        settings = MixupSettings(unk_token_id=tokenizer.unk_token_id, num_segments=len(task.text_fields))
        collators = {"dynamic": BatchCollator(tokenizer), f"pad to {args.pad_to}": BatchCollator(tokenizer, args.pad_to)}
        seconds = {name: 0.0 for name in collators}
        tokens = {name: 0 for name in collators}
        examples = 0
        for round_index in range(args.rounds + 1):          # round 0 is warm-up
            for name, collator in collators.items():
                for step in range(args.steps):
                    rows = rows_at(data.train, range(step * args.batch_size, (step + 1) * args.batch_size))
                    batch, labels = collator(rows)
                    batch = {k: v.to(args.device) for k, v in batch.items()}
                    _sync(args.device)
                    start = time.perf_counter()
                    train_step(model, optimizer, batch, labels.to(args.device), args.method, settings)
                    _sync(args.device)
                    if round_index > 0:
                        seconds[name] += time.perf_counter() - start
                        tokens[name] += batch["input_ids"].numel()
            if round_index > 0:
                examples += args.steps * args.batch_size
        rate = {name: examples / seconds[name] for name in collators}
        fixed = f"pad to {args.pad_to}"
        results.append({"task": task_name, "examples_per_sec": rate,
                        "mean_padded_length": {n: tokens[n] / examples for n in collators},
                        "speedup_dynamic_vs_fixed": rate["dynamic"] / rate[fixed]})
    return {"model": args.model, "method": args.method, "device": args.device, "batch_size": args.batch_size,
            "timed_steps": args.steps * args.rounds, "tasks": results}


def format_padding_report(report: dict) -> str:
    lines = [f"training examples/s, {report['model']}, method {report['method']}, batch {report['batch_size']}, "
             f"{report['device']}, {report['timed_steps']} timed steps per setting", "",
             "| task | dynamic ex/s | fixed ex/s | mean length dynamic / fixed | speed-up |",
             "|---|---:|---:|---:|---:|"]
    for row in report["tasks"]:
        (dyn, fixed), (ld, lf) = row["examples_per_sec"].values(), row["mean_padded_length"].values()
        lines.append(f"| {row['task']} | {dyn:.1f} | {fixed:.1f} | {ld:.1f} / {lf:.0f} | "
                     f"{row['speedup_dynamic_vs_fixed']:.2f}x |")
    return "\n".join(lines)


def run_padding_benchmark(args) -> int:
    args.device = resolve_device(args.device)
    report = bench_padding(args)
    print(format_padding_report(report))
    if args.json:
        with open(args.json, "w") as handle:
            handle.write(json.dumps(report, indent=2) + "\n")
    return 0


def main(argv=None) -> int:
    from ssmix.bench_args import add_data_arguments, add_step_arguments

    parser = argparse.ArgumentParser(prog="python -m ssmix.bench")
    sub = parser.add_subparsers(dest="which", required=True)
    add_step_arguments(sub.add_parser("step", help="time one optimiser step of every method"))
    add_data_arguments(sub.add_parser("padding", help="training examples/s: dynamic padding vs fixed"))
    args = parser.parse_args(argv)
    return run_step_benchmark(args) if args.which == "step" else run_padding_benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
