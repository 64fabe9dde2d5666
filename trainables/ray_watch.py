"""Noticing at once that the driver's Ray is gone (a killed raylet or GCS, a lost head node).

Without this, Ray's core worker retries the GCS for a minute and then ends the driver with one
line of its own, leaving the invocation "running" and its runs RUNNING. The watch asks the two
servers the driver depends on, its node's raylet and the cluster's GCS, whether they still accept
connections (public addresses from ``ray.nodes()`` and the runtime context only), and calls
``on_lost`` from its own thread after a few failed checks in a row: the main thread may be blocked
inside Ray by then.
"""

from __future__ import annotations

import socket
import threading
from typing import Callable

import ray


def _answers(host: str, port: int, timeout: float) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def ray_endpoints() -> dict[str, tuple[str, int]]:
    """The GCS and this node's raylet, as (host, port): what the driver cannot run without."""
    context = ray.get_runtime_context()
    host, _, port = context.gcs_address.rpartition(":")
    endpoints = {"GCS": (host, int(port))}
    node = next((n for n in ray.nodes() if n["NodeID"] == context.get_node_id()), None)
    if node is not None:
        endpoints["raylet"] = (node["NodeManagerAddress"], int(node["NodeManagerPort"]))
    return endpoints


class RayWatch:
    def __init__(self, on_lost: Callable[[str], None], interval: float = 1.0, misses: int = 3):
        self.on_lost, self.interval, self.misses = on_lost, interval, misses
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._endpoints: dict[str, tuple[str, int]] = {}

    def start(self) -> "RayWatch":
        self._endpoints = endpoints = ray_endpoints()
        self._thread = threading.Thread(target=self._watch, args=(endpoints,), name="ssmix-ray-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()

    def lost_now(self) -> str | None:
        """Checked once, now: what is gone, if anything."""
        for name, (host, port) in self._endpoints.items():
            if not _answers(host, port, timeout=self.interval):
                return f"Ray's {name} at {host}:{port} stopped answering"
        return None

    def _watch(self, endpoints: dict[str, tuple[str, int]]) -> None:
        missed = dict.fromkeys(endpoints, 0)
        while not self._stopped.wait(self.interval):
            for name, (host, port) in endpoints.items():
                missed[name] = 0 if _answers(host, port, timeout=self.interval) else missed[name] + 1
                if missed[name] >= self.misses and not self._stopped.is_set():
                    self.on_lost(f"Ray's {name} at {host}:{port} stopped answering")
                    return
