"""Task data: from the hub or a local directory, checked row by row, tokenised once (the
``datasets`` cache), padded per batch.

Local layout (the same as ``../shared/data``): ``<dir>/<local_name>/<split>.jsonl`` with the
hub's column names and integer label ids. ``SSMIX_DATA_DIR`` names the directory when no
``data_dir`` is given.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from ssmix.tasks import TaskSpec

datasets.disable_progress_bars()


class DataError(ValueError):
    """Bad task data; the message names the file (or hub id), split, row and field."""


DEV_SPLIT_SEED = 0


@dataclass
class TaskData:
    task: TaskSpec
    train: datasets.Dataset                   # tokenised: input_ids, attention_mask, ..., labels
    evals: dict[str, datasets.Dataset]
    collator: "BatchCollator"


def data_dir_from_env(data_dir: str | os.PathLike | None) -> Path | None:
    value = data_dir or os.environ.get("SSMIX_DATA_DIR")
    return Path(value).expanduser() if value else None


# ------------------------------------------------------------------------------------ loading


def split_file(task: TaskSpec, split: str, data_dir: Path | None) -> Path | None:
    if task.data_files is not None:
        if split not in task.data_files:
            raise DataError(f"task {task.name!r} declares no file for split {split!r}; "
                            f"declared: {sorted(task.data_files)}")
        # A task's own files: relative to where the command runs, never to the data directory.
        return Path(task.data_files[split]).expanduser()
    if data_dir is None:
        return None
    return data_dir / (task.local_name or task.name) / f"{split}.jsonl"


def _first_bad_json_line(path: Path) -> str | None:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                return f"{path}: row {number}: not valid JSON ({err.msg})"
            if not isinstance(row, dict):
                return f"{path}: row {number}: expected a JSON object, got {type(row).__name__}"
    return None


def load_split(task: TaskSpec, split: str, data_dir: Path | None) -> tuple[datasets.Dataset, str]:
    """One raw split and a description of where it came from (for error messages)."""
    path = split_file(task, split, data_dir)
    if path is None:
        source = f"hub dataset {task.hub_path}" + (f"/{task.hub_name}" if task.hub_name else "")
        try:
            return datasets.load_dataset(task.hub_path, task.hub_name, split=split), f"{source} split {split!r}"
        except Exception as err:  # the hub's errors are long and varied: one line is enough
            raise DataError(f"cannot load {source} split {split!r} ({type(err).__name__}: "
                            f"{str(err).splitlines()[0] if str(err) else ''}); without network, pass "
                            f"--data-dir or set SSMIX_DATA_DIR to a local copy") from None
    if not path.is_file():
        raise DataError(f"task {task.name!r} split {split!r}: file {path} not found "
                        f"(expected <data-dir>/{task.local_name or task.name}/{split}.jsonl)")
    kind = "csv" if path.suffix == ".csv" else "json"
    with open(path, encoding="utf-8", errors="replace") as handle:
        if not any(line.strip() for line in handle):
            raise DataError(f"{path}: split {split!r} of task {task.name!r} is empty")
    if kind == "json":
        bad = _first_bad_json_line(path)
        if bad:
            raise DataError(bad)
    try:
        ds = datasets.load_dataset(kind, data_files=str(path), split="train")
    except Exception as err:
        raise DataError(f"{path}: cannot be read as {kind.upper()} ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''})") from None
    return ds, str(path)


def check_split(ds: datasets.Dataset, task: TaskSpec, split: str, source: str) -> datasets.Dataset:
    """Fail on the first bad row with one message; map string labels through ``label_map``."""
    if len(ds) == 0:
        raise DataError(f"{source}: split {split!r} of task {task.name!r} is empty")
    for field in task.text_fields + (task.label_field,):
        if field not in ds.column_names:
            raise DataError(f"{source}: missing column {field!r} (task {task.name!r} needs "
                            f"{list(task.text_fields) + [task.label_field]}; found {ds.column_names})")
    for field in task.text_fields:
        for row, text in enumerate(ds[field], start=1):
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{source}: row {row}: field {field!r} is {text!r}, expected non-empty text")
    labels = ds[task.label_field]
    if task.label_map is not None:
        mapped = []
        for row, label in enumerate(labels, start=1):
            if str(label) not in task.label_map:
                raise DataError(f"{source}: row {row}: field {task.label_field!r} is {label!r}, "
                                f"expected one of {sorted(task.label_map)}")
            mapped.append(task.label_map[str(label)])
        ds = ds.remove_columns(task.label_field).add_column(task.label_field, mapped)
        labels = mapped
    for row, label in enumerate(labels, start=1):
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < task.num_labels:
            raise DataError(f"{source}: row {row}: field {task.label_field!r} is {label!r}, "
                            f"expected an integer label in 0..{task.num_labels - 1}")
    return ds


def load_checked(task: TaskSpec, split: str, data_dir: Path | None) -> datasets.Dataset:
    ds, source = load_split(task, split, data_dir)
    return check_split(ds, task, split, source)


# ------------------------------------------------------------------------------- tokenising


def tokenize(ds: datasets.Dataset, task: TaskSpec, tokenizer: PreTrainedTokenizerBase,
             max_length: int) -> datasets.Dataset:
    """No padding here (the collator pads per batch); ``datasets`` caches the result by the
    fingerprint of (data, tokenizer, task fields, max length). A pair longer than ``max_length``
    loses tokens from its longer text first (the tokenizer's ``longest_first``)."""
    fields, label_field = task.text_fields, task.label_field

    def encode(rows):
        texts = [rows[f] for f in fields]
        out = tokenizer(*texts, truncation=True, max_length=max_length, return_special_tokens_mask=True)
        out["labels"] = rows[label_field]
        return out

    return ds.map(encode, batched=True, remove_columns=ds.column_names)


def rows_at(ds: datasets.Dataset, indices) -> list[dict]:
    """Rows of a tokenised dataset as the list of dicts a collator takes (one columnar read)."""
    columns = ds[list(indices)]
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


class BatchCollator:
    """Pads input_ids, attention_mask, token_type_ids and special_tokens_mask (with 1s, so the
    mixers see padding as special) to the longest example of the batch."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, pad_to: int | None = None):
        self.pad = DataCollatorWithPadding(tokenizer, padding="max_length" if pad_to else "longest",
                                           max_length=pad_to, return_tensors="pt")

    def __call__(self, rows: list[dict]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        batch = dict(self.pad(rows))
        labels = batch.pop("labels")
        return batch, labels


def load_task_data(task: TaskSpec, tokenizer: PreTrainedTokenizerBase, *, max_length: int = 128,
                   data_dir: str | os.PathLike | None = None, seed: int = 0, train_fraction: float = 1.0,
                   max_train_examples: int | None = None, max_eval_examples: int | None = None,
                   pad_to: int | None = None, dev_fraction: float | None = None) -> TaskData:
    """``dev_fraction``: hold out this share of train as a ``dev`` split that alone selects the
    best checkpoint (for tasks whose only evaluation split is the reported one, e.g. TREC's test);
    the task's own splits are still evaluated and reported. The held-out rows are the same for
    every seed (``DEV_SPLIT_SEED``), so trials of different seeds select on the same examples."""
    directory = data_dir_from_env(data_dir)
    if directory is not None and task.data_files is None and not directory.is_dir():
        raise DataError(f"data directory {directory} does not exist")
    train_parts = [load_checked(task, split, directory) for split in task.train_splits]
    train = datasets.concatenate_datasets(train_parts) if len(train_parts) > 1 else train_parts[0]
    dev = None
    if dev_fraction:
        held = train.train_test_split(test_size=dev_fraction, seed=DEV_SPLIT_SEED)
        train, dev = held["train"], held["test"]
        task = task.model_copy(update={"eval_splits": ("dev",) + task.eval_splits, "selection_splits": ("dev",)})
    if train_fraction < 1.0:  # the reference code's random 75% (docs/protocols.md), only when asked
        keep = max(1, int(len(train) * train_fraction))
        train = train.shuffle(seed=seed).select(range(keep))
    if max_train_examples is not None and max_train_examples < len(train):
        train = train.shuffle(seed=seed).select(range(max_train_examples))
    evals = {}
    for split in task.eval_splits:
        ds = dev if split == "dev" and dev is not None else load_checked(task, split, directory)
        if max_eval_examples is not None and max_eval_examples < len(ds):
            ds = ds.select(range(max_eval_examples))
        evals[split] = tokenize(ds, task, tokenizer, max_length)
    return TaskData(task=task, train=tokenize(train, task, tokenizer, max_length), evals=evals,
                    collator=BatchCollator(tokenizer, pad_to))
