"""Ctrl-C and SIGTERM (`ray job stop`, a batch scheduler, `kill`) raise in the driver, so the
invocation and the runs it started are closed as killed."""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """SIGTERM: handled as Ctrl-C is."""


received: list[str] = []     # the stop signals this driver has received ("Ctrl-C", "SIGTERM")
# A driver's MLflow calls give up after one retry and 10 s: a tracking server that went away must
# not hold training up (the events mark the cell unsynced; `sweep sync` pushes it later).
TRACKING_PATIENCE = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


@contextmanager
def scoped_environ(**values: str):
    """Set environment variables for the duration of the block only (an in-process caller, a
    test, keeps its own environment); a variable the user set already is left as it is."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


@contextmanager
def stops_as_interrupts():
    """Tune's own Ctrl-C handler is turned off: it would end the run quietly, as if every cell had
    failed, to save an experiment state we never resume from (our store is). Our handlers are
    installed explicitly: a process started in the background by a shell inherits SIGINT ignored,
    and Python then raises nothing on it."""
    received.clear()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    catch_stop_signals()
    try:
        with scoped_environ(TUNE_DISABLE_SIGINT_HANDLER="1"):
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
