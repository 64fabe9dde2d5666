"""Every `ssmix sweep run` and `ssmix sweep sync` of a sweep is one *invocation*, recorded on the
sweep's storage (``invocations.json``) and mirrored to the sweep's one MLflow parent run.

A record says who ran what and how it ended: running, finished, failed (cells failed or MLflow
could not be reached), or killed. A live invocation holds a lock of its own
(``invocations/<n>.lock``): a flock, which the kernel drops when the process dies, however it dies
(SIGKILL, ``ray job stop``, a lost node); on object storage a lease, which runs out when nobody
renews it. So a record still marked running whose lock is free belongs to a driver that is gone,
and the next invocation, or ``ssmix sweep sync``, closes it as killed.
Storage is the truth because it is written even while MLflow is down.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field

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
    """The records under ``cells/`` of a sweep's storage (``ssmix.sweep.storage``)."""

    def __init__(self, storage):
        self.storage = storage
        self.key = "cells/invocations.json"
        self._own: tuple[int, ExitStack] | None = None    # this process's invocation and its held lock

    def read(self) -> list[InvocationRecord]:
        text = self.storage.read_text(self.key)
        try:
            return [InvocationRecord(**record) for record in json.loads(text)] if text else []
        except ValueError:
            return []

    @staticmethod
    def _lock_key(number: int) -> str:
        return f"cells/invocations/{number}.lock"

    def _update(self, change) -> list[InvocationRecord]:
        with self.storage.lock("cells/.invocations.lock"):
            records = self.read()
            change(records)
            self.storage.write_text(self.key, json.dumps([asdict(r) for r in records], indent=2, default=str))
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
        return (self._own is not None and self._own[0] == number) or self.storage.lock_held(self._lock_key(number))

    def any_alive(self) -> bool:
        """Whether a driver of the sweep runs now (what ``gc`` waits for)."""
        return any(r.running and self._alive(r.number) for r in self.read())

    def begin(self, command: str, sweep_file: str, cells: int) -> InvocationRecord:
        """A new running record, its lock held by this process until ``end``."""
        added: list[InvocationRecord] = []

        def add(records):
            number = max((r.number for r in records), default=0) + 1
            held = ExitStack()
            held.enter_context(self.storage.lock(self._lock_key(number)))
            self._own = (number, held)
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
        if self._own is not None:
            self._own[1].close()     # releases the lock
            self._own = None
        return ended[0]
