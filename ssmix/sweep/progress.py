"""The sweep's progress as a person reads it: one line per event, with the counts."""

from __future__ import annotations


class Progress:
    def __init__(self, total: int, done_before: int):
        self.total, self.done, self.running, self.failed, self.blocked = total, done_before, 0, 0, 0

    def started(self, label: str) -> None:
        self.running += 1
        self._line("started", label)

    def finished(self, label: str) -> None:
        self.running -= 1
        self.done += 1
        self._line("finished", label)

    def failed_cell(self, label: str, reason: str, was_running: bool = True) -> None:
        self.running -= 1 if was_running else 0
        self.failed += 1
        self._line(f"FAILED ({reason[:200]})", label)

    def blocked_cell(self, label: str, reason: str) -> None:
        self.blocked += 1
        self._line(f"blocked ({reason[:200]})", label)

    def _line(self, event: str, label: str) -> None:
        pending = self.total - self.done - self.running - self.failed - self.blocked
        print(f"[sweep] {event}: {label} | cells done {self.done}, running {self.running}, pending {pending}, "
              f"failed {self.failed}" + (f", blocked {self.blocked}" if self.blocked else ""), flush=True)
