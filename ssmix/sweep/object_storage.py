"""Object stores behind a sweep: any fsspec URL (``s3://bucket/prefix``; ``gs://``, ``az://``,
``file://`` through the same code). An object is written whole or not at all; locks are leases on
exclusive create (``ssmix.sweep.lease``); a store that does not answer is waited for with backoff
(``_patient``). S3's endpoint, region and credentials come from the standard AWS environment."""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ssmix.files import Busy
from ssmix.sweep.storage import RETRY_SECONDS_ENV, Held, Storage, StorageError

# What an object store says about an object, not about itself: not retried.
ANSWERS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)


def _unanswered() -> tuple[type[BaseException], ...]:
    """The errors of a store that did not answer: the OS's, and botocore's own connection and
    transfer errors (which s3fs passes on as they are); never a missing credential."""
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import HTTPClientError
    except ImportError:
        return (OSError,)
    return (OSError, BotoConnectionError, HTTPClientError)



_OUTAGES: dict[str, float] = {}     # store -> when it stopped answering: one line per outage, per process


def _patient(method):
    """An object-store call retried with backoff while the store does not answer (503 SlowDown,
    a restart, a dropped connection: an OSError that is not an answer about the object itself),
    for up to $SSMIX_STORAGE_RETRY_SECONDS; one line says so when an outage begins."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        deadline, pause = None, 0.5
        while True:
            try:
                result = method(self, *args, **kwargs)
                _OUTAGES.pop(self.url, None)
                return result
            except ANSWERS:
                raise
            except _unanswered() as err:
                limit = self.patience if self.patience is not None else float(os.environ.get(RETRY_SECONDS_ENV) or 600)
                deadline = deadline or time.monotonic() + limit
                if _OUTAGES.get(self.url) is None:
                    _OUTAGES[self.url] = time.monotonic()
                    first = str(err).splitlines()[0] if str(err) else ""
                    print(f"[storage] {self.url} did not answer ({type(err).__name__}: {first[:200]}); retrying for "
                          f"up to {limit:g} s, nothing is lost meanwhile", file=sys.stderr, flush=True)
                if time.monotonic() >= deadline:
                    raise StorageError(f"{self.url} did not answer for {limit:g} s ({type(err).__name__}: "
                                       f"{str(err)[:200]})") from err
                time.sleep(pause)
                pause = min(pause * 2, 10.0)
                self.fs.invalidate_cache()
    return call


class ObjectStorage(Storage):
    """An fsspec filesystem under ``url``; leases for locks (``ssmix.sweep.lease``)."""

    def __init__(self, url: str):
        import fsspec

        self.url = url
        # One policy for a store that does not answer (``_patient``: backoff, one line per outage):
        # S3's client retries a moment only, then says so.
        scheme = url.split("://", 1)[0]
        s3 = scheme in ("s3", "s3a")
        self.local = scheme == "file"     # a directory through the lease protocol (Lustre, NFS)
        options = {"config_kwargs": {"retries": {"max_attempts": 2, "mode": "standard"}}} if s3 else {}
        if self.local:
            options["auto_mkdir"] = True
        self.fs, self.root = fsspec.core.url_to_fs(url, **options)
        if s3:
            self.fs.retries = 1
        self.root = self.root.rstrip("/")
        self.patience: float | None = None      # seconds to retry for (None: $SSMIX_STORAGE_RETRY_SECONDS)

    def check(self) -> str | None:
        """As ``Storage.check``, patient for seconds only: before a sweep, a store that does not
        answer is a mistake to say at once (a wrong endpoint), not an outage to sit out."""
        self.patience = 10.0
        try:
            return Storage.check(self)
        finally:
            self.patience = None

    def full(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    @_patient
    def read_bytes(self, key: str) -> bytes | None:
        try:
            return self.fs.cat_file(self.full(key))
        except (FileNotFoundError, IsADirectoryError):
            return None

    @_patient
    def write_bytes(self, key: str, data: bytes) -> None:
        path = self.full(key)
        if self.local:     # a file is written in place: written beside it, then renamed over it
            beside = f"{path}.{os.getpid()}-{threading.get_ident()}.tmp"
            self.fs.pipe_file(beside, data)
            self.fs.mv(beside, path)
        else:
            self.fs.pipe_file(path, data)       # one PUT: the object appears whole
        self.fs.invalidate_cache(path.rsplit("/", 1)[0])

    @_patient
    def create(self, key: str, data: bytes) -> bool:
        path = self.full(key)
        self.fs.invalidate_cache(path.rsplit("/", 1)[0])
        try:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            with self.fs.open(path, "xb") as handle:
                handle.write(data)
            return True
        except FileExistsError:
            return False

    @_patient
    def exists(self, key: str) -> bool:
        self.fs.invalidate_cache(self.full(key))
        return self.fs.exists(self.full(key))

    @_patient
    def delete(self, key: str) -> None:
        path = self.full(key)
        self.fs.invalidate_cache(path)
        try:
            self.fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass
        self.fs.invalidate_cache(path.rsplit("/", 1)[0])

    @_patient
    def children(self, key: str) -> list[str]:
        path = self.full(key)
        self.fs.invalidate_cache(path)
        try:
            found = self.fs.ls(path, detail=False)
        except FileNotFoundError:
            return []
        return sorted({name.rstrip("/").rsplit("/", 1)[-1] for name in found if name.rstrip("/") != path})

    @_patient
    def size(self, key: str = "") -> int:
        path = self.full(key)
        self.fs.invalidate_cache(path)
        try:
            return int(self.fs.du(path, total=True))
        except FileNotFoundError:
            return 0

    @_patient
    def listing(self, key: str = "") -> dict[str, int]:
        path = self.full(key)
        self.fs.invalidate_cache(path)
        start = len(self.root) + 1
        return {name[start:]: int(info.get("size") or 0)
                for name, info in self.fs.find(path, detail=True).items() if info.get("type") != "directory"}

    @_patient
    def read_many(self, keys: list[str]) -> dict[str, bytes]:
        """Concurrently, in s3fs's batches: 5,000 results in a few seconds rather than 5,000 round trips."""
        if not keys:
            return {}
        start = len(self.root) + 1
        return {path[start:]: data for path, data in self.fs.cat([self.full(k) for k in keys], on_error="omit").items()
                if isinstance(data, bytes)}

    @_patient
    def put_folder(self, local: Path, key: str) -> None:
        local = Path(local)
        for file in sorted(p for p in local.rglob("*") if p.is_file()):
            relative = file.relative_to(local).as_posix()
            self.fs.put_file(str(file), self.full(f"{key}/{relative}"))
        self.fs.invalidate_cache(self.full(key))

    @_patient
    def get_folder(self, key: str, local: Path) -> bool:
        path = self.full(key)
        self.fs.invalidate_cache(path)
        try:
            files = [f for f in self.fs.find(path) if not f.endswith("/")]
        except FileNotFoundError:
            return False
        for remote in files:
            target = Path(local) / remote[len(path):].lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(remote, str(target))
        return bool(files)

    def local_path(self, key: str) -> None:
        return None

    @contextmanager
    def lock(self, key: str, blocking: bool = True, shared: bool = False) -> Iterator["Held"]:
        from ssmix.sweep.lease import Lease

        lease = Lease.acquire(self, key, blocking=blocking)
        if lease is None:
            raise Busy(f"{self.url}/{key} is held by another process")
        try:
            yield lease
        finally:
            lease.release()

    def lock_held(self, key: str) -> bool:
        from ssmix.sweep.lease import Lease

        return Lease.live(self, key)


