"""Before anything runs: the model path exists and every data file the sweep needs is there and
readable row by row. All problems are listed at once."""

from __future__ import annotations

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
