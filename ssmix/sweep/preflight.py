"""Before anything runs: the model path exists, every data file the sweep needs is there and
readable row by row, and the storage path can be written. All problems are listed at once."""

from __future__ import annotations

import os
from pathlib import Path

from ssmix.sweep.spec import SweepConfig, SweepError


def preflight(sweep: SweepConfig) -> None:
    from ssmix.data import DataError, data_dir_from_env, load_checked
    from ssmix.models import resolve_model_path
    from ssmix.tasks import get_task

    problems = []
    try:
        resolve_model_path(sweep.model)
    except ValueError as err:
        problems.append(f"model: {err}")
    storage = storage_problem(sweep.storage_path)
    if storage:
        problems.append(f"storage_path: {storage}")
    directory = data_dir_from_env(sweep.data_dir)
    if directory is not None and not directory.is_dir():
        problems.append(f"data_dir: {directory} does not exist")
    for name in sweep.tasks:
        task = get_task(sweep.task_spec(name))
        if task.data_files is None and (directory is None or not directory.is_dir()):
            continue   # read from the hub at training time
        for split in dict.fromkeys(task.train_splits + task.eval_splits):
            try:
                load_checked(task, split, directory)
            except DataError as err:
                problems.append(f"data ({name}): {err}")
    if problems:
        raise SweepError(f"sweep {sweep.name!r} cannot run; {len(problems)} problem(s):\n" +
                         "\n".join(f"  {p}" for p in problems))


def storage_problem(storage_path: str) -> str | None:
    """Why results could not be written under ``storage_path`` (None if they can)."""
    path = Path(storage_path).expanduser().resolve()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a directory (for {path})"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable (for {path})"
    return None
