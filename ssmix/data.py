"""Task data for training: the checked splits (``ssmix.splits``) tokenised once (the
``datasets`` cache) and padded per batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import datasets
import torch
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from ssmix.splits import DataError, data_dir_from_env, load_checked
from ssmix.tasks import TaskSpec

DEV_SPLIT_SEED = 0


@dataclass
class TaskData:
    task: TaskSpec
    train: datasets.Dataset                   # tokenised: input_ids, attention_mask, ..., labels
    evals: dict[str, datasets.Dataset]
    collator: "BatchCollator"


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
