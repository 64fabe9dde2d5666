"""What the test modules share: tiny models and data built in code, one sweep-file builder, and
`ssmix sweep run` as a process. Fixtures are in conftest.py; no test module imports another."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
import yaml
from transformers import BertConfig, BertForSequenceClassification

from ssmix.cell_training import FAULT_FILE
from ssmix.config import PhaseConfig, TrialConfig
from ssmix.outcome import FinetuneResult, PhaseResult
from ssmix.sweep import CellResult, ResultStore

BIN = Path(sys.executable).parent
SECRET = "tok-" + "9f2c41d7e0b5a8c3"   # planted in a sweep process's environment: must never reach MLflow

WORDS = ("the a an is was what who where when how why which of to in on for with by from and or "
         "not good bad great movie film story actor plot city country river name year number many "
         "much long first capital president invented wrote play song book game team water food "
         "animal color money day night love hate boring funny sad happy very quite really").split()


def tiny_bert(num_labels=3, vocab_size=len(WORDS) + 8, dropout=0.0, layers=2, seed=0, attn="eager"):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=37, max_position_embeddings=64,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                        num_labels=num_labels)
    return BertForSequenceClassification._from_config(config, attn_implementation=attn)


def encode(tokenizer, texts, pairs=None):
    return dict(tokenizer(texts, pairs, padding=True, return_special_tokens_mask=True, return_tensors="pt"))


QUESTIONS = [("what is the capital city of the country", 4), ("who wrote the book", 3),
             ("how many animal in the river", 5), ("what color is the water", 1),
             ("where is the river", 4), ("who invented the game", 3), ("what year was the song", 5),
             ("how much money for the food", 5), ("what is the name of the team", 1),
             ("why is the story sad", 2), ("where is the first city", 4), ("who is the president", 3)]
PAIRS = [("the movie was good", "the film was great", 0), ("the plot was boring", "the story was funny", 1),
         ("the actor was great", "the actor was good", 0), ("the food was bad", "the food was good", 1),
         ("a sad story", "a very sad book", 0), ("the team was happy", "the team was sad", 1)]


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def tiny_trial(phase2_epochs: int = 1, eval_every: int = 3) -> dict:
    """Trial settings for a tiny model on the tiny data: a few steps per phase."""
    return {"batch_size": 8, "eval_every": eval_every, "phase1": {"epochs": 1, "lr": 5e-4},
            "phase2": {"epochs": phase2_epochs, "lr": 1e-4}}


def sweep_file(tmp: Path, model_dir, data_dir, name: str = "sweep", seeds=(0, 1), methods=("none", "ssmix"),
               trial: dict | None = None, path: Path | None = None, **extra) -> Path:
    """A sweep file of the tiny model on TREC-coarse, everything it writes under ``tmp``
    (storage, a SQLite MLflow store and its artifacts); ``seeds=None`` leaves seeds out (a search);
    any other key of a sweep file in ``extra``."""
    sweep = {"name": name, "model": str(model_dir), "tasks": ["trec-coarse"], "methods": list(methods),
             "data_dir": None if data_dir is None else str(data_dir), "storage_path": str(tmp / "storage"),
             "tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}", "resources": {"cpu": 1},
             "trial": trial if trial is not None else tiny_trial()}
    if seeds is not None:
        sweep["seeds"] = list(seeds)
    sweep.update(extra)
    if sweep["tracking_uri"] == f"sqlite:///{tmp / 'mlflow.db'}":
        empty_tracking_store(tmp / "mlflow.db")
    path = path or tmp / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(sweep))
    return path


_EMPTY_STORE: list[bytes] = []


def empty_tracking_store(path: Path) -> None:
    """An empty MLflow SQLite store at ``path`` (unless one is there), as MLflow makes it on first
    use: a copy of one made once per test process, since making one runs MLflow's schema
    migrations (over a second of CPU each time, and the suite makes a hundred)."""
    if path.exists():
        return
    if not _EMPTY_STORE:
        import tempfile

        from mlflow.tracking import MlflowClient

        quiet = [logging.getLogger(name) for name in ("mlflow", "alembic")]   # its "Creating tables..."
        levels = [logger.level for logger in quiet]
        try:
            for logger in quiet:
                logger.setLevel(logging.WARNING)
            with tempfile.TemporaryDirectory() as folder:
                MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db").search_experiments()
                _EMPTY_STORE.append((Path(folder) / "mlflow.db").read_bytes())
        finally:
            for logger, level in zip(quiet, levels):
                logger.setLevel(level)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_EMPTY_STORE[0])


def tracking_store_untouched(path: Path) -> bool:
    """No tracking store at ``path``, or only the empty one ``sweep_file`` put there, unchanged."""
    return not path.exists() or (bool(_EMPTY_STORE) and path.read_bytes() == _EMPTY_STORE[0])


def finished_result(accuracy: float = 0.9, split: str = "test", phase2: bool = True) -> CellResult:
    """A finished cell's result as a fine-tune makes it (one evaluation, no history)."""
    phase = PhaseResult("phase2" if phase2 else "phase1", "ssmix" if phase2 else "none", accuracy, {split: accuracy},
                        best_step=1, steps=1)
    outcome = FinetuneResult(config={}, phase1=None if phase2 else phase, phase2=phase if phase2 else None,
                             best_selection=accuracy, best_accuracy={split: accuracy}, best_phase=phase.phase)
    return CellResult.finished(outcome)


def timeless(history: list[dict]) -> list[dict]:
    """A metric history without its throughput (the one figure that depends on the machine's speed)."""
    return [{k: v for k, v in h.items() if k != "examples_per_sec"} for h in history]


def plant_fault(sweep, cell, mode: str = "raise"):
    """Make ``cell``'s trial fail once after its next evaluation (``raise`` or ``kill`` its worker;
    ``hold``: wait there until the file is removed; see ssmix.cell_training.FAULT_FILE). Returns
    the cell's folder."""
    store = ResultStore.for_sweep(sweep)
    store.write_cell_file(cell.id, FAULT_FILE, mode)
    return store.storage.local_path(store.key(cell.id))


def hold_until_started(sweep, held, started, count=None, timeout=300) -> threading.Thread:
    """Hold the ``held`` cells at their first evaluation (fault mode ``hold``) until ``count``
    cells of ``started`` (all, by default) have begun an attempt, then let them go on: proof that
    those cells ran while the held ones trained, on a machine of any speed. ``timeout`` only
    bounds a hang (a scheduler that never starts them): the held cells then go on and the test's
    checks fail."""
    store = ResultStore.for_sweep(sweep)
    for cell in held:
        store.write_cell_file(cell.id, FAULT_FILE, "hold")

    def release():
        deadline = time.time() + timeout
        wanted = len(started) if count is None else count
        while time.time() < deadline and sum(bool(store.attempts(c.id)) for c in started) < wanted:
            time.sleep(0.05)
        for cell in held:
            store.delete_cell_file(cell.id, FAULT_FILE)

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    return thread


def sweep_process(path, env_extra=None, in_process=False):
    """`ssmix sweep run` as a process of its own; ``in_process``: without Ray, for the tests of
    what does not depend on the runner (MLflow outages, claims on storage), in a fraction of the time."""
    env = dict(os.environ, SSMIX_TEST_SECRET=SECRET, RAY_AUTH_TOKEN_UNUSED=SECRET, PYTHONUNBUFFERED="1",
               **(env_extra or {}))
    return subprocess.Popen([str(BIN / "ssmix"), "sweep", "run", *(["--in-process"] if in_process else []), str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)


def read_until(process, needle, timeout=300):
    """Read the process's output until a line contains needle; returns all lines read."""
    lines, deadline = [], time.time() + timeout
    while time.time() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} not seen; output:\n{''.join(lines)[-3000:]}")


def drain(process, timeout=300):
    out, _ = process.communicate(timeout=timeout)
    return out


def batch_from_lengths(lengths, T=None, pair_lengths=None, start_id=10):
    """Hand-built batch: [CLS] p [SEP] (q [SEP]) [PAD]...; token ids encode (row, position)."""
    rows = []
    for i, length in enumerate(lengths):
        ids = [2] + [start_id + 100 * i + t for t in range(length)] + [3]
        if pair_lengths is not None:
            ids += [start_id + 100 * i + 50 + t for t in range(pair_lengths[i])] + [3]
        rows.append(ids)
    T = T or max(len(r) for r in rows)
    input_ids = torch.zeros(len(rows), T, dtype=torch.long)
    attention = torch.zeros(len(rows), T, dtype=torch.long)
    special = torch.ones(len(rows), T, dtype=torch.long)
    for i, ids in enumerate(rows):
        input_ids[i, :len(ids)] = torch.tensor(ids)
        attention[i, :len(ids)] = 1
        special[i, :len(ids)] = torch.tensor([1 if t in (2, 3) else 0 for t in ids])
    return {"input_ids": input_ids, "attention_mask": attention, "special_tokens_mask": special,
            "token_type_ids": torch.zeros_like(input_ids)}


def short_config(model_dir, data_dir, **overrides):
    values = dict(task="trec-coarse", model=model_dir, method="ssmix", seed=0, batch_size=8, eval_batch_size=4,
                  eval_every=2, data_dir=str(data_dir), mix_ratio=0.3,
                  phase1=PhaseConfig(epochs=1, lr=5e-4), phase2=PhaseConfig(epochs=2, lr=1e-4))
    values.update(overrides)
    return TrialConfig(**values)
