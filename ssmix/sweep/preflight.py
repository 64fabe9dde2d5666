"""Before anything runs: the model path exists, every data file the sweep needs is there and
readable row by row, and the storage path can be written. All problems are listed at once."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from ssmix.sweep.spec import SweepConfig, SweepError


def check_ray_address(address: str | None, timeout: float = 10.0) -> None:
    """A cluster address that does not answer is a user error: say so before anything starts."""
    if not address or address in ("auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    host, port = parsed.hostname, parsed.port
    if host is None or port is None:
        raise ConnectionError(f"Ray address {address!r} is not host:port or http://host:port")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        raise ConnectionError(f"Ray cluster at {address} is unreachable ({err.strerror or err})") from None


def preflight(sweep: SweepConfig, address: str | None = None) -> None:
    from ssmix.models import resolve_model_path
    from ssmix.splits import DataError, data_dir_from_env, load_checked
    from ssmix.tasks import get_task

    problems = durable_location_problems(sweep, address)
    try:
        resolve_model_path(sweep.model)
    except ValueError as err:
        problems.append(f"model: {err}")
    storage = storage_problem(sweep)
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


def durable_location_problems(sweep: SweepConfig, address: str | None) -> list[str]:
    """With a Ray address the sweep runs on a cluster or inside a Ray job (which sets RAY_ADDRESS).
    There a relative path resolves inside the job's temporary copy of the working directory
    (runtime_resources/working_dir_files/_ray_pkg_<hash>/): the results vanish from the user's view,
    and the next submission gets a new copy and trains everything again. Refuse it up front."""
    if not address:
        return []
    problems = []
    if "://" not in sweep.storage and not Path(sweep.storage).expanduser().is_absolute():
        problems.append(
            f"storage_path: {sweep.storage!r} is relative, and this sweep runs on a Ray cluster ({address}): "
            f"inside a Ray job it would land in the job's temporary copy of the working directory, and a "
            f"resubmission would start from nothing. Give an absolute path that every node mounts "
            f"(e.g. /shared/ray_results), as storage_path in the sweep file or SSMIX_STORAGE_PATH on the nodes")
    tracking_file = relative_tracking_file(sweep.tracking)
    if tracking_file:
        problems.append(
            f"tracking_uri: {sweep.tracking!r} is a file relative to the working directory ({tracking_file}), "
            f"and this sweep runs on a Ray cluster ({address}): the runs would land in the job's temporary "
            f"copy of it, out of your sight. Give an MLflow server (http://HOST:5000) as tracking_uri or "
            f"MLFLOW_TRACKING_URI")
    return problems


def relative_tracking_file(uri: str) -> str | None:
    """The relative path of a file-based MLflow store (sqlite:///x.db, file:x, ./mlruns), else None."""
    if uri.startswith("sqlite:///"):
        path = uri.removeprefix("sqlite:///")
    elif uri.startswith("file:"):
        path = uri.removeprefix("file:").removeprefix("//")
    elif "://" in uri:
        return None   # a server or a database
    else:
        path = uri
    return None if path.startswith(("/", "~")) else path


def storage_problem(sweep: SweepConfig) -> str | None:
    """Why results could not be kept on the sweep's storage (None if they can): a directory that
    cannot be written, an object store that does not answer or cannot create exclusively, locks
    that cannot be trusted (``Storage.check``)."""
    from ssmix.sweep.storage import open_storage

    if "://" not in sweep.storage:
        path = Path(sweep.sweep_url)
        existing = path
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            return f"{existing} is a file, not a directory (for {path})"
        if not os.access(existing, os.W_OK | os.X_OK):
            return f"{existing} is not writable (for {path})"
    return open_storage(sweep.sweep_url).check()
