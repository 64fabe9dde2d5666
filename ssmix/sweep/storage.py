"""Where a sweep keeps what it makes (results, checkpoints, claims, invocation records): one
interface, two backends. The rest of the service names things by key ("cells/<id>/result.json")
and does not know which backend it has.

- ``PosixStorage``: a directory every node mounts (NFS, a local disk). Writes are atomic renames;
  locks are ``flock``, which the kernel drops when the holder dies (a killed driver leaves no stale
  claim), coherent on local disks and NFSv4. A filesystem whose flock cannot be trusted (Lustre
  mounted ``noflock``: flock fails; ``localflock``: each node holds its own) is refused at the
  preflight, with the way out: the same directory as ``file://PATH``, which uses leases.
- ``ObjectStorage`` (``ssmix.sweep.object_storage``): any fsspec URL (``s3://bucket/prefix``; ``gs://``, ``az://``, ``file://``
  through the same code). An object is written whole or not at all (write, then publish); locks
  are leases on exclusive create (``ssmix.sweep.lease``). S3's endpoint, region and credentials come
  from the standard AWS environment (``AWS_ENDPOINT_URL`` for an S3-compatible server).

Keys are '/'-separated and relative to the sweep's root.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ssmix.files import Busy, atomic_write, locked, tree_bytes

LEASE_SECONDS_ENV = "SSMIX_LEASE_SECONDS"     # a lease's life without renewal (default 60)
RETRY_SECONDS_ENV = "SSMIX_STORAGE_RETRY_SECONDS"   # how long an object store may not answer (default 600)


class StorageError(OSError):
    """The storage cannot hold a sweep as configured; the message names the storage and why."""


class Storage(ABC):
    url: str            # where it is, as the user named it (no secret in it)

    # ------------------------------------------------------------------------------ objects
    @abstractmethod
    def read_bytes(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is none."""

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None:
        """Publish ``data`` under ``key``: a reader sees the old object or the new one, never a part."""

    @abstractmethod
    def create(self, key: str, data: bytes) -> bool:
        """Publish ``data`` only if ``key`` does not exist (O_EXCL / If-None-Match: *); whether it did."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object or the folder of objects under ``key`` (nothing if there is none)."""

    @abstractmethod
    def children(self, key: str) -> list[str]:
        """Names directly under ``key`` (objects and folders), sorted."""

    @abstractmethod
    def size(self, key: str = "") -> int:
        """Bytes of everything under ``key``."""

    @abstractmethod
    def listing(self, key: str = "") -> dict[str, int]:
        """Every object under ``key`` (full keys) with its bytes, in one listing (on an object
        store, one LIST request per 1,000 objects, not one per folder)."""

    def read_many(self, keys: list[str]) -> dict[str, bytes]:
        """The objects of ``keys`` that exist, read together."""
        return {key: data for key in keys if (data := self.read_bytes(key)) is not None}

    def read_text(self, key: str) -> str | None:
        data = self.read_bytes(key)
        return None if data is None else data.decode()

    def write_text(self, key: str, text: str) -> None:
        self.write_bytes(key, text.encode())

    # ------------------------------------------------------------------------ folders of files
    @abstractmethod
    def put_folder(self, local: Path, key: str) -> None:
        """Copy the files under ``local`` to ``key`` (those that changed)."""

    @abstractmethod
    def get_folder(self, key: str, local: Path) -> bool:
        """Copy the files under ``key`` into ``local``; whether there were any."""

    @abstractmethod
    def local_path(self, key: str) -> Path | None:
        """Where ``key`` is on this machine's filesystem, if the storage is one (POSIX), else None."""

    # ----------------------------------------------------------------------------------- locks
    @abstractmethod
    def lock(self, key: str, blocking: bool = True, shared: bool = False):
        """Hold ``key``'s lock for the block: exclusive (or shared, POSIX only); held until the
        block ends or the process dies. ``blocking=False`` raises ``Busy`` instead of waiting.
        Yields a handle whose ``check()`` raises if the lock was lost (a lease that ran out)."""

    @abstractmethod
    def lock_held(self, key: str) -> bool:
        """Whether some process holds ``key``'s lock now (a live driver's invocation)."""

    def check(self) -> str | None:
        """Why this storage cannot hold a sweep (None if it can): it is written to and read back,
        and its locks are tried."""
        probe = f".ssmix-probe/{os.getpid()}"
        try:
            self.write_text(probe, "probe")
            if self.read_text(probe) != "probe":
                return f"{self.url}: an object written could not be read back"
            if not self.create(f"{probe}.x", b"1") or self.create(f"{probe}.x", b"2"):
                return (f"{self.url}: exclusive create (O_EXCL, If-None-Match: *) of the key {probe}.x is not "
                        f"honoured, so two drivers could both claim a cell")
            return self._check_locks(f"{probe}.lock")
        except OSError as err:
            return f"{self.url}: cannot be written ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        finally:
            try:
                self.delete(".ssmix-probe")
            except OSError:
                pass

    def _check_locks(self, key: str) -> str | None:
        return None


class Held:
    """A lock that cannot be lost while its holder lives (flock)."""

    def check(self) -> None:
        pass


# --------------------------------------------------------------------------------------- POSIX


class PosixStorage(Storage):
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.url = str(self.root)

    def path(self, key: str) -> Path:
        return self.root / key if key else self.root

    def read_bytes(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return None

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: tmp.write_bytes(data))

    def create(self, key: str, data: bytes) -> bool:
        """Written whole beside it, then linked into place: link() fails if the name exists, so
        the content is complete the moment it is visible."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
        tmp.write_bytes(data)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def delete(self, key: str) -> None:
        path = self.path(key)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def children(self, key: str) -> list[str]:
        path = self.path(key)
        return sorted(p.name for p in path.iterdir()) if path.is_dir() else []

    def size(self, key: str = "") -> int:
        return tree_bytes(self.path(key))

    def listing(self, key: str = "") -> dict[str, int]:
        found = {}
        for folder, _, files in os.walk(self.path(key)):
            for name in files:
                path = Path(folder) / name
                try:
                    found[path.relative_to(self.root).as_posix()] = path.lstat().st_size
                except FileNotFoundError:     # removed while listed
                    pass
        return found

    def put_folder(self, local: Path, key: str) -> None:
        target = self.path(key)
        if Path(local).resolve() != target.resolve():
            shutil.copytree(local, target, dirs_exist_ok=True)

    def get_folder(self, key: str, local: Path) -> bool:
        source = self.path(key)
        if not source.is_dir():
            return False
        if Path(local).resolve() != source.resolve():
            shutil.copytree(source, local, dirs_exist_ok=True)
        return True

    def local_path(self, key: str) -> Path:
        return self.path(key)

    def check(self) -> str | None:
        """As ``Storage.check``, on the nearest folder that exists already (the sweep's folder is
        not made by a check), in a folder of its own that is removed afterwards."""
        existing = self.root
        while not existing.exists():
            existing = existing.parent
        try:
            probe = Path(tempfile.mkdtemp(prefix=".ssmix-probe-", dir=existing))
        except OSError as err:
            return f"{self.url}: cannot be written ({err.strerror or err})"
        try:
            problem = Storage.check(PosixStorage(probe))
            return problem.replace(str(probe), str(self.root)) if problem else None
        finally:
            shutil.rmtree(probe, ignore_errors=True)

    @contextmanager
    def lock(self, key: str, blocking: bool = True, shared: bool = False) -> Iterator["Held"]:
        with locked(self.path(key), blocking=blocking, shared=shared):
            yield Held()

    def lock_held(self, key: str) -> bool:
        try:
            with locked(self.path(key), blocking=False):
                return False
        except Busy:
            return True

    def _check_locks(self, key: str) -> str | None:
        local = flock_is_node_local(self.root)
        if local:
            return (f"{self.url}: {local}: two nodes would both hold one cell's claim. Give the same directory as "
                    f"file://{self.root.resolve()} (claims are then leases on exclusive create), or mount it with flock")
        try:
            with locked(self.path(key)):
                pass
        except OSError as err:
            return (f"{self.url}: its filesystem refuses flock ({err.strerror or err}; Lustre mounted noflock?), "
                    f"which claims need. Give it as file://{self.root.resolve()} (claims are then leases on "
                    f"exclusive create), or mount it with flock")
        return None


def flock_is_node_local(path: Path, mounts: str | None = None) -> str | None:
    """Why flock on ``path`` holds on this node only (Lustre's ``localflock``), from the mount that
    holds it in /proc/mounts (``mounts``: that file's text); None where it is coherent or unknown."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return None
    target = str(Path(path).resolve())
    best: tuple[str, str, str] | None = None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        point, kind, options = fields[1], fields[2], fields[3]
        if (target == point or target.startswith(point.rstrip("/") + "/")) and (best is None or len(point) > len(best[0])):
            best = (point, kind, options)
    if best and "localflock" in best[2].split(","):
        return f"mounted {best[1]} with localflock at {best[0]} (flock is not shared between nodes)"
    return None


def open_storage(url: str) -> Storage:
    """The storage behind a sweep's root: a URL with a scheme goes through fsspec, a path is POSIX."""
    if "://" in url:
        from ssmix.sweep.object_storage import ObjectStorage  # imports this module

        return ObjectStorage(url)
    return PosixStorage(Path(url).expanduser().resolve())


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A local folder of this process's, removed afterwards (a trial's working copy)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
