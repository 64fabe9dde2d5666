"""Data and model fetched once per sweep, not once per trial.

Before the first trial, the driver stages into the sweep's storage (``staged/``):

- every split of every task of the sweep, read and checked as a trial would read it (from the
  hub, from ``data_dir``, or from a custom task's files), as JSON Lines: ``staged/data/<digest>/
  <folder>/<split>.jsonl``, a data directory of the usual layout;
- the model, when it comes from the hub (``huggingface_hub.snapshot_download``, once), or, on an
  object store, from a folder only the driver has: ``staged/models/<digest>/``.

A trial reads the staged copy (on a shared directory in place, on an object store through a local
copy kept for the node) and never calls the hub. What is staged is named by its source, and a
stage already there is not made again; a cell's id does not depend on it (the cell's trial
settings keep the sweep file's data_dir and model; only the trial's own config points at the copy).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ssmix.files import locked
from ssmix.sweep.storage import Storage

CACHE_ENV = "SSMIX_STAGE_CACHE"       # where a node keeps its copies of the staged files


@dataclass(frozen=True)
class Staged:
    """Where the sweep's staged inputs are, as keys of its storage (what a trial is handed)."""
    data: str | None = None                           # a data directory: <folder>/<split>.jsonl
    custom_files: dict[str, dict[str, str]] = field(default_factory=dict)   # custom task -> split -> key
    model: str | None = None                          # a model folder

    def to_dict(self) -> dict:
        return {"data": self.data, "custom_files": self.custom_files, "model": self.model}

    @classmethod
    def from_dict(cls, d: dict | None) -> "Staged":
        return cls(**d) if d else cls()


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stage(sweep, storage: Storage) -> Staged:
    """Stage the sweep's data and model into ``storage`` (once: a stage already there is kept)."""
    from ssmix.splits import check_split, data_dir_from_env, load_split, split_file
    from ssmix.tasks import get_task

    directory = data_dir_from_env(sweep.data_dir)
    tasks = [get_task(sweep.task_spec(name)) for name in sweep.tasks]
    sources = []
    for task in tasks:
        for split in dict.fromkeys(task.train_splits + task.eval_splits):
            path = split_file(task, split, directory)
            sources.append((task.name, split, _file_digest(path) if path else [task.hub_path, task.hub_name]))
    data = f"staged/data/{_digest(sources)}"
    custom: dict[str, dict[str, str]] = {}
    for task in tasks:
        folder = task.local_name or task.name
        for split in dict.fromkeys(task.train_splits + task.eval_splits):
            key = f"{data}/{folder}/{split}.jsonl"
            if task.data_files is not None:
                custom.setdefault(task.name, {})[split] = key
            if storage.exists(key):
                continue
            rows, source = load_split(task, split, directory)     # the hub, data_dir or the task's own file
            check_split(rows, task, split, source)                # as a trial would: a bad row stops here
            storage.write_text(key, "".join(json.dumps(row) + "\n" for row in rows))   # as read, labels unmapped
    return Staged(data=data, custom_files=custom, model=_stage_model(sweep.model, storage))


def _file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()[:16]


def is_hub_id(name: str) -> bool:
    """A model name the hub is asked for (not an alias, not a path on this machine)."""
    from ssmix.models import ALIASES

    return name not in ALIASES and not os.path.isdir(os.path.expanduser(name))


def _stage_model(name: str, storage: Storage) -> str | None:
    """The model's staged folder: a hub model always (trials never call the hub); a folder of the
    driver's (or the ``minilm`` alias) only where the nodes cannot read it (an object store)."""
    from ssmix.models import resolve_model_path

    hub = is_hub_id(name)
    if not hub and storage.local_path("") is not None:
        return None
    key = f"staged/models/{_digest(name)}"
    if storage.exists(f"{key}/config.json"):
        return key
    if hub:
        from huggingface_hub import snapshot_download

        wanted = ["*.json", "*.txt", "*.model", "*.safetensors"]
        folder = Path(snapshot_download(name, allow_patterns=wanted))
        if not list(folder.glob("*.safetensors")):        # an older model: its weights as a .bin
            folder = Path(snapshot_download(name, allow_patterns=wanted + ["*.bin"]))
    else:
        folder = Path(resolve_model_path(name))
    storage.put_folder(folder, key)
    return key


def local_inputs(staged: Staged, storage: Storage, trial: dict) -> dict:
    """The trial settings (``trial``: a cell's) that point at this machine's copies of the staged
    inputs: data_dir, model, a custom task's data files; none where nothing was staged."""
    overrides: dict = {}
    if staged.data is not None:
        root = _local(storage, staged.data)
        overrides["data_dir"] = str(root)
        task = trial.get("task")
        if isinstance(task, dict) and task.get("name") in staged.custom_files:
            files = staged.custom_files[task["name"]]
            overrides["task"] = dict(task, data_files={split: str(root / key[len(staged.data) + 1:])
                                                       for split, key in files.items()})
    if staged.model is not None:
        overrides["model"] = str(_local(storage, staged.model))
    return overrides


def _local(storage: Storage, key: str) -> Path:
    """``key``'s folder on this machine: in place on a shared directory; else a copy in the node's
    cache, fetched once (a lock keeps two trials of the node from fetching it together)."""
    local = storage.local_path(key)
    if local is not None:
        return local
    cache = Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "ssmix-staged")
    target = cache / _digest(storage.url, key)
    with locked(cache / f".{target.name}.lock"):
        if not (target / ".complete").exists():
            partial = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=cache))
            storage.get_folder(key, partial)
            (partial / ".complete").write_text("")
            shutil.rmtree(target, ignore_errors=True)
            partial.rename(target)
    return target
