"""Locks on object storage, which has none: leases on exclusive create.

A lock is a folder of generations, ``<key>/<n>.lease``, each an object ``{"holder", "expires_at",
"released"}``. The newest generation says who holds the lock:

- To take it: when the folder is empty, create generation 0; when the newest generation is
  released or its lease ran out (its holder died), create the next one. Creation is exclusive
  (If-None-Match: * on S3, O_EXCL locally), so of any number of takers exactly one wins.
- While it holds it, the holder renews its own generation (only it writes that object) every
  third of the lease, and checks that no newer generation exists; one that does means its lease
  ran out while it could not renew, and it stops (``LeaseLost``).
- It lets go by marking its generation released, and removes the older ones.

Only the holder writes its generation and only a taker creates the next, so no write needs a
compare-and-swap, and any fsspec store with exclusive create serves (S3, GCS, Azure, a local
disk). Expiry compares wall clocks: nodes must agree within a fraction of the lease (NTP does).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid

LEASE_SECONDS = 60.0
POLL_SECONDS = 2.0      # how often a blocked taker looks again


class LeaseLost(RuntimeError):
    """The holder's lease ran out and another process took the lock."""


def lease_seconds() -> float:
    from ssmix.sweep.storage import LEASE_SECONDS_ENV

    return float(os.environ.get(LEASE_SECONDS_ENV) or LEASE_SECONDS)


def _generation(name: str) -> int | None:
    stem, dot, suffix = name.partition(".")
    return int(stem) if dot and suffix == "lease" and stem.isdigit() else None


class Lease:
    def __init__(self, storage, key: str, generation: int, holder: str, seconds: float):
        self.storage, self.key, self.generation, self.holder, self.seconds = storage, key, generation, holder, seconds
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"ssmix-lease-{key}", daemon=True)

    # ------------------------------------------------------------------------------- taking it

    @classmethod
    def acquire(cls, storage, key: str, blocking: bool = True, seconds: float | None = None) -> "Lease | None":
        seconds = seconds or lease_seconds()
        holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        while True:
            generation = cls._next_free(storage, key)
            if generation is not None and storage.create(cls._name(key, generation),
                                                         cls._body(holder, time.time() + seconds)):
                lease = cls(storage, key, generation, holder, seconds)
                lease._thread.start()
                return lease
            if not blocking:
                return None
            time.sleep(min(POLL_SECONDS, seconds / 3))

    @classmethod
    def live(cls, storage, key: str) -> bool:
        """Whether a holder's lease on ``key`` is live now."""
        return cls._next_free(storage, key) is None

    @classmethod
    def _next_free(cls, storage, key: str) -> int | None:
        """The generation a taker may create now, or None while the lock is held."""
        generations = sorted(g for g in map(_generation, storage.children(key)) if g is not None)
        if not generations:
            return 0
        newest = storage.read_text(cls._name(key, generations[-1]))
        try:
            state = json.loads(newest or "")
        except ValueError:          # removed since the listing, or still being written: look again
            return None
        if state["released"] or state["expires_at"] < time.time():
            return generations[-1] + 1
        return None

    @staticmethod
    def _name(key: str, generation: int) -> str:
        return f"{key}/{generation:08d}.lease"

    @staticmethod
    def _body(holder: str, expires_at: float, released: bool = False) -> bytes:
        return json.dumps({"holder": holder, "expires_at": expires_at, "released": released}).encode()

    # ------------------------------------------------------------------------------ holding it

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                self.storage.write_bytes(self._name(self.key, self.generation),
                                         self._body(self.holder, time.time() + self.seconds))
                newer = [g for g in map(_generation, self.storage.children(self.key))
                         if g is not None and g > self.generation]
            except OSError:
                continue        # the store did not answer: try again; the lease runs out if it never does
            if newer:
                self.lost.set()
                return

    def check(self) -> None:
        """Raise ``LeaseLost`` if another process took the lock (a holder that could not renew)."""
        if self.lost.is_set():
            raise LeaseLost(f"{self.storage.url}/{self.key}: the lease ran out and was taken over")

    def release(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        if self.lost.is_set():
            return
        self.storage.write_bytes(self._name(self.key, self.generation), self._body(self.holder, 0.0, released=True))
        for name in self.storage.children(self.key):
            older = _generation(name)
            if older is not None and older < self.generation:
                self.storage.delete(f"{self.key}/{name}")
