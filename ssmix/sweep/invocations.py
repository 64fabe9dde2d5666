"""Every `ssmix sweep run` and `ssmix sweep sync` of a sweep is one *invocation*, recorded on the
sweep's storage (``invocations.json``) and mirrored to the sweep's one MLflow parent run.

A record says who ran what and how it ended: running, finished, failed (cells failed or MLflow
could not be reached), or killed. A live invocation holds an exclusive lock on its own file
(``invocations/<n>.lock``); the kernel drops it when the process dies, however it dies (SIGKILL,
``ray job stop``, a lost node). So a record still marked running whose lock is free belongs to a
driver that is gone, and the next invocation, or ``ssmix sweep sync``, closes it as killed.
Storage is the truth because it is written even while MLflow is down.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ssmix.files import Busy, locked, write_json

RUNNING, FINISHED, FAILED, KILLED = "running", "finished", "failed", "killed"
KILLED_REASON = "the driver stopped without closing it (killed, `ray job stop`, or its machine was lost)"


@dataclass
class InvocationRecord:
    number: int
    command: str                  # run / sync
    sweep_file: str
    status: str                   # RUNNING, FINISHED, FAILED or KILLED
    host: str
    pid: int
    started: float
    cells: int
    counts: dict[str, int] = field(default_factory=dict)
    summary: str = ""
    ended: float | None = None
    reason: str = ""

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    def describe(self) -> str:
        """One line per invocation, for the parent run's invocation log."""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        line = f"#{self.number} {self.command} {self.sweep_file} on {self.host} at {when}: {self.status}"
        if self.counts:
            line += " (" + ", ".join(f"{k} {v}" for k, v in self.counts.items()) + ")"
        if self.reason:
            line += f"; {self.reason}"
        return line


class Invocations:
    def __init__(self, sweep_dir: Path):
        self.root = Path(sweep_dir)
        self.path = self.root / "invocations.json"
        self._handle = None     # the open lock file of this process's invocation

    def read(self) -> list[InvocationRecord]:
        try:
            stored = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []
        return [InvocationRecord(**record) for record in stored]

    def _lock_path(self, number: int) -> Path:
        return self.root / "invocations" / f"{number}.lock"

    def _update(self, change) -> list[InvocationRecord]:
        with locked(self.root / ".invocations.lock"):
            records = self.read()
            change(records)
            write_json(self.path, [asdict(r) for r in records])
            return records

    def close_interrupted(self) -> list[InvocationRecord]:
        """Mark killed every running record whose process is gone; returns those records."""
        closed: list[InvocationRecord] = []

        def close(records):
            for record in records:
                if not record.running or self._alive(record.number):
                    continue
                # When it died is not known; "ended" is when it was found dead.
                record.status, record.reason, record.ended = KILLED, KILLED_REASON, time.time()
                closed.append(record)

        self._update(close)
        return closed

    def _alive(self, number: int) -> bool:
        if self._handle is not None and self._handle.name == str(self._lock_path(number)):
            return True
        try:
            with locked(self._lock_path(number), blocking=False):
                return False
        except Busy:
            return True

    def begin(self, command: str, sweep_file: str, cells: int) -> InvocationRecord:
        """A new running record, its lock held by this process until ``end``."""
        added: list[InvocationRecord] = []

        def add(records):
            number = max((r.number for r in records), default=0) + 1
            path = self._lock_path(number)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(path, "a")
            fcntl.flock(self._handle, fcntl.LOCK_EX)
            added.append(InvocationRecord(number, command, str(sweep_file), RUNNING, socket.gethostname(),
                                          os.getpid(), time.time(), cells))
            records.append(added[0])

        self._update(add)
        return added[0]

    def end(self, number: int, status: str, counts: dict, summary: str, reason: str = "") -> InvocationRecord:
        ended: list[InvocationRecord] = []

        def close(records):
            for r in records:
                if r.number == number:
                    r.status, r.counts, r.summary, r.ended = status, counts, summary, time.time()
                    r.reason = reason or r.reason
                    ended.append(r)

        self._update(close)
        if self._handle is not None:
            self._handle.close()     # releases the lock
            self._handle = None
        return ended[0]
