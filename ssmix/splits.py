"""A task's splits read from the hub or a local directory and checked row by row, before any
tokenizer or model is loaded: what a sweep's preflight checks and what training reads (no torch).

Local layout (the same as ``../shared/data``): ``<dir>/<local_name>/<split>.jsonl`` with the
hub's column names and integer label ids. ``SSMIX_DATA_DIR`` names the directory when no
``data_dir`` is given.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import datasets

from ssmix.tasks import TaskSpec


class DataError(ValueError):
    """Bad task data; the message names the file (or hub id), split, row and field."""


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
    """One raw split and a description of where it came from (for error messages). ``datasets``
    draws no progress bars from here on (a trial's log would fill with them)."""
    datasets.disable_progress_bars()
    path = split_file(task, split, data_dir)
    if path is None:
        source = f"hub dataset {task.hub_path}" + (f"/{task.hub_name}" if task.hub_name else "")
        try:
            return load_from_hub(task, split), f"{source} split {split!r}"
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


SCRIPTS_GONE = "Dataset scripts are no longer supported"     # datasets >= 4, on a loading script
PARQUET_REVISION = "refs/convert/parquet"                     # the hub's own conversion of such a dataset


def load_from_hub(task: TaskSpec, split: str) -> datasets.Dataset:
    """A split from the hub. A dataset that is a loading script (which ``datasets`` 4 no longer
    runs) is read from the hub's parquet conversion instead, saying so in one line."""
    try:
        return datasets.load_dataset(task.hub_path, task.hub_name, split=split)
    except RuntimeError as err:
        if SCRIPTS_GONE not in str(err):
            raise
    print(f"[data] {task.hub_path} is a loading script, which datasets 4 no longer runs: reading the hub's "
          f"parquet conversion ({PARQUET_REVISION}) instead", flush=True)
    return datasets.load_dataset(task.hub_path, task.hub_name, split=split, revision=PARQUET_REVISION)


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
