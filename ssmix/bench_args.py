"""The benchmarks' command-line flags, apart from ``ssmix.bench`` so that building the CLI's
parser (``ssmix --help``) imports no torch."""

from __future__ import annotations

import argparse


def add_step_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model name or path (default: a built-in small BERT)")
    parser.add_argument("--batch-size", type=int, default=32, help="examples per step")
    parser.add_argument("--min-len", type=int, default=8, help="shortest random sentence, in tokens")
    parser.add_argument("--max-len", type=int, default=40, help="longest random sentence, in tokens")
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds (one step of every method each)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    parser.add_argument("--device", default="auto", help="cuda, cpu, or auto (cuda when available)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    parser.add_argument("--json", default=None, help="also write the report as JSON to this file")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="minilm", help="model name or path")
    parser.add_argument("--data-dir", default=None, help="local data (default: $SSMIX_DATA_DIR, else ../shared/data)")
    parser.add_argument("--tasks", nargs="+", default=["trec-coarse", "sst2"], help="tasks to read real batches of")
    parser.add_argument("--method", default="none", help="the method whose step is timed")
    parser.add_argument("--batch-size", type=int, default=32, help="examples per step")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per setting and round")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of both settings")
    parser.add_argument("--pad-to", type=int, default=128, help="the fixed padding compared with dynamic padding")
    parser.add_argument("--device", default="auto", help="cuda, cpu, or auto (cuda when available)")
    parser.add_argument("--json", default=None, help="also write the report as JSON to this file")
