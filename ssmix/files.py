"""The two file primitives everything that writes shared state uses: an atomic write and a lock.

Storage may be a shared file system read by other processes (Ray workers, a second driver) at any
moment, so nothing is ever written in place: a reader sees the old file or the new one.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Write ``path`` through ``write(tmp_path)`` and rename it into place (atomic on POSIX)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")   # per process: two writers never share it
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | os.PathLike, obj) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, default=str)))


class Busy(RuntimeError):
    """A non-blocking lock request found the lock held."""


@contextmanager
def locked(path: str | os.PathLike, *, shared: bool = False, blocking: bool = True) -> Iterator[None]:
    """flock on ``path`` (created if missing): exclusive, or shared among readers. The kernel
    releases it when the holder dies, so a killed process never leaves a stale lock; it works on
    local disks and NFSv4. ``blocking=False`` raises ``Busy`` instead of waiting."""
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    if not blocking:
        mode |= fcntl.LOCK_NB
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, mode)
        except OSError as err:
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise Busy(f"{path} is locked by another process") from None
            raise
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def tree_bytes(path: str | os.PathLike) -> int:
    """Bytes of the files under ``path`` (0 if it does not exist)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:   # removed while we walked (a cell finishing)
                pass
    return total
