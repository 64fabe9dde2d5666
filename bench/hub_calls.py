"""How often a sweep asks the HF hub, before and after staging: a 10-cell sweep (2 seeds; phase 1
and four phase-2 methods) of a tiny BERT on TREC-coarse, with the hub played by counting loaders
(this machine has no network).

    python bench/hub_calls.py

"Before": every cell trained as trials trained before staging, reading the hub itself
(``train_stored_cell`` without staged inputs). "After": ``ssmix sweep run --in-process``, which
stages once and hands the trials the staged copy. Prints both counts, measured.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
from pathlib import Path

import datasets
import transformers
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
HUB_MODEL = "tiny-org/tiny-bert"


def fake_hub(model_dir: str, calls: dict) -> None:
    """Loaders that play the hub: TREC's splits and a tiny BERT; each call to the hub counted."""
    from tests.helpers import QUESTIONS

    rows = {"train": [{"text": q, "coarse_label": c, "fine_label": c} for q, c in QUESTIONS] * 2,
            "test": [{"text": q, "coarse_label": c, "fine_label": c} for q, c in QUESTIONS[:6]]}
    load_dataset = datasets.load_dataset

    def hub_dataset(path, *args, **kwargs):
        if path == "CogComp/trec":
            calls["datasets"] += 1
            return datasets.Dataset.from_list(rows[kwargs["split"]])
        return load_dataset(path, *args, **kwargs)

    def snapshot_download(name, **kwargs):
        calls["models"] += 1
        return model_dir

    datasets.load_dataset = hub_dataset
    import huggingface_hub

    huggingface_hub.snapshot_download = snapshot_download
    for loader in (transformers.AutoTokenizer, transformers.AutoModelForSequenceClassification):
        original = loader.from_pretrained.__func__

        def counted(cls, name, *args, _original=original, **kwargs):
            if not os.path.isdir(str(name)):
                calls["models"] += 1
                name = model_dir                 # the hub would send the same files
            return _original(cls, name, *args, **kwargs)

        loader.from_pretrained = classmethod(counted)


def main() -> int:
    from ssmix.cell_training import train_stored_cell
    from ssmix.cli import main as ssmix
    from ssmix.sweep import ResultStore, load_sweep, plan_cells
    from ssmix.sweep.cells import Placement
    from tests.helpers import WORDS, tiny_bert

    work = Path(tempfile.mkdtemp(prefix="hub-calls-"))
    (work / "vocab").mkdir()
    (work / "vocab" / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "?", ".", ","]
                                                         + list(WORDS)) + "\n")
    (work / "vocab" / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer", "do_lower_case": true}')
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(work / "vocab"))
    model_dir = work / "model"
    tiny_bert(num_labels=6).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    calls = {"datasets": 0, "models": 0}
    fake_hub(str(model_dir), calls)

    def sweep_file(name: str) -> Path:
        path = work / f"{name}.yaml"
        path.write_text(yaml.safe_dump({
            "name": name, "model": HUB_MODEL, "tasks": ["trec-coarse"], "seeds": [0, 1],
            "methods": ["none", "ssmix", "embedmix", "tmix", "unk"], "storage_path": str(work / "storage"),
            "tracking_uri": f"sqlite:///{work / 'mlflow.db'}", "resources": {"cpu": 1},
            "trial": {"batch_size": 8, "eval_every": 3, "phase1": {"epochs": 1, "lr": 5e-4},
                      "phase2": {"epochs": 1, "lr": 1e-4}}}))
        return path

    before = load_sweep(sweep_file("before"))
    store = ResultStore.for_sweep(before)
    cells = plan_cells(before)
    for cell in cells:     # in dependency order: each phase 1 before its phase 2s
        train_stored_cell(cell, store, lambda evaluation: None, Placement(hostname=socket.gethostname(), device="cpu"))
    counted_before = dict(calls)
    calls.update(datasets=0, models=0)
    assert ssmix(["sweep", "run", "--in-process", str(sweep_file("after"))]) == 0
    print(json.dumps({"cells": len(cells), "before": counted_before, "after": dict(calls)}))
    print(f"\nhub calls of a {len(cells)}-cell sweep: before staging {sum(counted_before.values())} "
          f"({counted_before['datasets']} dataset splits, {counted_before['models']} model and tokenizer loads); "
          f"after {sum(calls.values())} ({calls['datasets']} splits, {calls['models']} model), all by the driver")
    return 0


if __name__ == "__main__":
    sys.exit(main())
