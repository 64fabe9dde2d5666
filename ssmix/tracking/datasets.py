"""The data a cell trained and was evaluated on, as MLflow dataset inputs."""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache

from mlflow.entities import Dataset, DatasetInput, InputTag

from ssmix.sweep.cells import Cell
from ssmix.tracking.layout import digest, task_of


def dataset_inputs(cell: Cell) -> list[DatasetInput]:
    """The splits a cell trained and was evaluated on, as MLflow dataset inputs (name, digest of
    the file's content or of the hub address, row count), so the UI's dataset column shows them."""
    from ssmix.splits import data_dir_from_env, split_file

    trial = cell.trial
    task = task_of(trial["task"])
    directory = data_dir_from_env(trial.get("data_dir"))
    inputs = []
    for context, splits in (("train", task.train_splits), ("eval", task.eval_splits)):
        for split in splits:
            path = split_file(task, split, directory)
            name = f"{task.local_name or task.name}/{split}"
            if path is not None and path.is_file():
                file_digest, rows = _file_digest(str(path), path.stat().st_mtime_ns)
                dataset = Dataset(name=name, digest=file_digest, source_type="local",
                                  source=json.dumps({"file": name + ".jsonl"}),
                                  profile=json.dumps({"num_rows": rows}))
            else:
                source = task.hub_path or task.name
                dataset = Dataset(name=name, digest=digest([source, split]), source_type="hugging_face",
                                  source=json.dumps({"path": source, "split": split}))
            inputs.append(DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)]))
    return inputs


@lru_cache(maxsize=256)
def _file_digest(path: str, mtime_ns: int) -> tuple[str, int]:
    sha, rows = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        for line in handle:
            sha.update(line)
            rows += 1
    return sha.hexdigest()[:16], rows
