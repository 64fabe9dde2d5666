"""Ctrl-C and SIGTERM (`ray job stop`, a batch scheduler, `kill`) raise in the driver, so the
invocation and the runs it started are closed as killed, whatever runs the cells."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """SIGTERM: handled as Ctrl-C is."""


received: list[str] = []     # the stop signals this driver has received ("Ctrl-C", "SIGTERM")


@contextmanager
def stops_as_interrupts():
    """Our handlers, installed explicitly for the block: a process started in the background by
    a shell inherits SIGINT ignored, and Python then raises nothing on it. (Tune's own Ctrl-C
    handler is off: ``ssmix.cli`` sets TUNE_DISABLE_SIGINT_HANDLER at its start.)"""
    received.clear()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    catch_stop_signals()
    try:
        yield
    finally:
        if threading.current_thread() is threading.main_thread():
            for number, handler in previous.items():
                signal.signal(number, handler)


def catch_stop_signals() -> None:
    """Also called after ``ray.init``: Ray's core worker installs its own SIGTERM handler, which
    aborts the process."""
    if threading.current_thread() is threading.main_thread():
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, _on_stop_signal)


def _on_stop_signal(signum, frame):
    name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    received.append(name)
    raise KeyboardInterrupt(name) if signum == signal.SIGINT else Terminated(name)
