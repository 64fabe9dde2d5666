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
from pathlib import Path

from ssmix.files import Busy, locked, write_json

RUNNING, FINISHED, FAILED, KILLED = "running", "finished", "failed", "killed"
KILLED_REASON = "the driver stopped without closing it (killed, `ray job stop`, or its machine was lost)"


class Invocations:
    def __init__(self, sweep_dir: Path):
        self.root = Path(sweep_dir)
        self.path = self.root / "invocations.json"
        self._handle = None     # the open lock file of this process's invocation

    def read(self) -> list[dict]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []

    def _lock_path(self, number: int) -> Path:
        return self.root / "invocations" / f"{number}.lock"

    def _update(self, change) -> list[dict]:
        with locked(self.root / ".invocations.lock"):
            records = self.read()
            change(records)
            write_json(self.path, records)
            return records

    def close_interrupted(self) -> list[dict]:
        """Mark killed every running record whose process is gone; returns those records."""
        closed: list[dict] = []

        def close(records):
            for record in records:
                if record["status"] != RUNNING or self._alive(record["number"]):
                    continue
                # When it died is not known; "ended" is when it was found dead.
                record.update(status=KILLED, reason=KILLED_REASON, ended=time.time())
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

    def begin(self, command: str, sweep_file: str, cells: int) -> dict:
        """A new running record, its lock held by this process until ``end``."""
        record: dict = {}

        def add(records):
            number = max((r["number"] for r in records), default=0) + 1
            path = self._lock_path(number)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(path, "a")
            fcntl.flock(self._handle, fcntl.LOCK_EX)
            record.update(number=number, command=command, sweep_file=str(sweep_file), status=RUNNING,
                          host=socket.gethostname(), pid=os.getpid(), started=time.time(), cells=cells)
            records.append(record)

        self._update(add)
        return record

    def end(self, record: dict, status: str, counts: dict, summary: str, reason: str = "") -> dict:
        def close(records):
            for r in records:
                if r["number"] == record["number"]:
                    r.update(status=status, counts=counts, summary=summary, ended=time.time())
                    if reason:
                        r["reason"] = reason
                    record.update(r)

        self._update(close)
        if self._handle is not None:
            self._handle.close()     # releases the lock
            self._handle = None
        return record


def describe(record: dict) -> str:
    """One line per invocation, for the parent run's invocation log."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record["started"]))
    line = f"#{record['number']} {record['command']} {record['sweep_file']} on {record['host']} at {when}: {record['status']}"
    counts = record.get("counts")
    if counts:
        line += " (" + ", ".join(f"{k} {v}" for k, v in counts.items()) + ")"
    if record.get("reason"):
        line += f"; {record['reason']}"
    return line
