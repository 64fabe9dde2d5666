"""A sweep's content-addressed results, the claims that make every cell train once, and what is
kept, on its storage (``ssmix.sweep.storage``: a shared directory or an object store):

    cells/<id>/result.json      the cell's result: finished (with its metric history) or stopped
                                early; the store alone reads and writes it
    cells/<id>/failure.json     why its last attempt failed (never over a result)
    cells/<id>/work/            the fine-tune's folder while the cell trains:
        phase*/state.pt         the latest checkpoint (model, optimiser, RNG): all that resuming
                                needs, replaced at each evaluation
        phase1/best/            phase 1's best weights, no optimiser state, kept while a phase-2
                                cell of the sweep may need them
        phase2/best/            only with ``keep_best_model: true``
    cells/<id>/.claim           held while the cell trains (flock, or a lease on object storage)
    tune/                       Tune's own trial folders (no checkpoints in them)

On a shared directory a trial trains in the cell's own work folder; on an object store it trains
in a local copy that is uploaded after every checkpoint, and a resumed trial starts from the
uploaded one. Retention: a finished cell keeps its result; the rest of its folder goes
(``release``), except best weights as above. ``gc`` removes what no cell of a sweep file needs.
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ssmix.files import Busy
from ssmix.sweep.cells import Cell, CellResult, Status
from ssmix.sweep.storage import Storage, open_storage, scratch

MIX_RECORD = "mix_examples.json"   # the mixes of phase 2's first step, as the step made them
MIX_PAGE = "mix_examples.html"     # those mixes drawn as Figure 1, by the trial after its result
MIX_PAGE_ERROR = "mix_examples.error"   # why the page could not be drawn: a warning on the run
CELL_ARTIFACTS = (MIX_PAGE,)       # files of a cell's folder that its MLflow run carries
PROGRESS = "progress.json"         # the running trial's phase and step (``ssmix.sweep.progress``)
ATTEMPTS = "attempts.log"          # one line per training attempt
CELL_ID = re.compile(r"^[0-9a-f]{16}$")


class ResultStore:
    def __init__(self, storage: Storage):
        if not isinstance(storage, Storage):    # a path here would fail only at the first read
            raise TypeError(f"ResultStore takes a Storage (open_storage(url)), not {type(storage).__name__}")
        self.storage = storage

    @classmethod
    def for_sweep(cls, sweep) -> "ResultStore":
        return cls(open_storage(sweep.sweep_url))

    @property
    def url(self) -> str:
        return self.storage.url

    @property
    def progress_every(self) -> float:
        """Seconds between a trial's progress writes: a file write is cheap, an object PUT is not."""
        return 1.0 if self.storage.local_path("") is not None else 5.0

    @staticmethod
    def key(cell_id: str, name: str = "") -> str:
        return f"cells/{cell_id}/{name}" if name else f"cells/{cell_id}"

    # ------------------------------------------------------------------------------ results

    def result(self, cell_id: str) -> CellResult | None:
        """The cell's outcome: done (finished, or stopped by an early-stopping scheduler: a rerun
        does not train it again), failed (its last attempt; a rerun trains it), or None."""
        return self.done(cell_id) or self._read(self.key(cell_id, "failure.json"))

    def done(self, cell_id: str) -> CellResult | None:
        """The cell's result if it needs no more training (finished or stopped), else None."""
        return self._read(self.key(cell_id, "result.json"))

    def finished(self, cell_id: str) -> CellResult | None:
        result = self.done(cell_id)
        return result if result is not None and result.is_finished else None

    def _read(self, key: str) -> CellResult | None:
        text = self.storage.read_text(key)
        return None if text is None else CellResult.from_json(json.loads(text))

    def write_result(self, cell: Cell, result: CellResult) -> None:
        """Store what a cell produced, in one shape whatever its state. A failure is kept apart,
        so that it never replaces a result another driver stored meanwhile."""
        text = json.dumps(result.to_json(cell), indent=2, default=str)
        if result.status is Status.FAILED:
            self.storage.write_text(self.key(cell.id, "failure.json"), text)
            return
        self.storage.write_text(self.key(cell.id, "result.json"), text)
        self.storage.delete(self.key(cell.id, "failure.json"))

    def has_weights(self, cell_id: str, phase: str = "phase1") -> bool:
        return self.storage.exists(self.key(cell_id, f"work/{phase}/best/config.json"))

    def needs_training(self, cell: Cell, waiting: bool = True) -> bool:
        """No result yet; or a phase-1 cell whose weights were collected while a phase-2 cell
        still waits for them (``waiting``; phase 1 is deterministic: it is trained again, to the
        same result)."""
        if self.done(cell.id) is None:
            return True
        return cell.kind == "phase1" and waiting and not self.has_weights(cell.id)

    # ------------------------------------------------------------------------ the cell's files

    def read_cell_file(self, cell_id: str, name: str) -> str | None:
        return self.storage.read_text(self.key(cell_id, name))

    def write_cell_file(self, cell_id: str, name: str, text: str) -> None:
        self.storage.write_text(self.key(cell_id, name), text)

    def delete_cell_file(self, cell_id: str, name: str) -> None:
        self.storage.delete(self.key(cell_id, name))

    def log_attempt(self, cell_id: str, line: str) -> None:
        """One more line of the cell's attempts (written by the claim's holder alone)."""
        before = self.read_cell_file(cell_id, ATTEMPTS) or ""
        self.write_cell_file(cell_id, ATTEMPTS, before + line.rstrip("\n") + "\n")

    def attempts(self, cell_id: str) -> list[str]:
        return (self.read_cell_file(cell_id, ATTEMPTS) or "").splitlines()

    @contextmanager
    def artifact(self, cell_id: str, name: str) -> Iterator[Path | None]:
        """A cell's file as a local path for the block (None if it has none): what an MLflow run
        carries as an artifact."""
        local = self.storage.local_path(self.key(cell_id, name))
        if local is not None:
            yield local if local.is_file() else None
            return
        data = self.storage.read_bytes(self.key(cell_id, name))
        if data is None:
            yield None
            return
        with scratch("ssmix-artifact-") as folder:
            (folder / name).write_bytes(data)
            yield folder / name

    # -------------------------------------------------------------------- training in a cell

    def claimed(self, cell_id: str) -> bool:
        """Whether some process holds the cell's claim now (another driver is training it)."""
        return self.storage.lock_held(self.key(cell_id, ".claim"))

    def claim(self, cell_id: str):
        """Exclusive claim on a cell while it trains: a second sweep (or a leftover trial of a
        killed driver) waits here, then finds the result instead of training the cell again.
        Yields a handle whose ``check()`` raises if the claim was lost (a lease that ran out)."""
        return self.storage.lock(self.key(cell_id, ".claim"))

    def active(self):
        """Held (shared) by every driver of a shared directory while it runs; ``gc`` needs it
        exclusively. On object storage ``gc`` asks for live invocations instead."""
        if self.storage.local_path("") is None:
            return nullcontext()
        return self.storage.lock(".active", shared=True)

    @contextmanager
    def workspace(self, cell_id: str) -> Iterator[Path]:
        """The fine-tune's folder for the block: the cell's own on a shared directory; on object
        storage a local copy of it (its last uploaded checkpoint, if any), removed afterwards."""
        local = self.storage.local_path(self.key(cell_id, "work"))
        if local is not None:
            local.mkdir(parents=True, exist_ok=True)
            yield local
            return
        with scratch(f"ssmix-{cell_id}-") as folder:
            self.storage.get_folder(self.key(cell_id, "work"), folder)
            yield folder

    def save_work(self, cell_id: str, folder: Path) -> None:
        """After a checkpoint: the working copy to storage, so that a retry anywhere resumes
        from it (nothing to do where the folder is the storage)."""
        if self.storage.local_path(self.key(cell_id, "work")) is None:
            self.storage.put_folder(folder, self.key(cell_id, "work"))

    @contextmanager
    def weights(self, cell_id: str, phase: str = "phase1") -> Iterator[Path]:
        """A cell's best weights as a local folder for the block (phase 2 starts from phase 1's)."""
        key = self.key(cell_id, f"work/{phase}/best")
        local = self.storage.local_path(key)
        if local is not None:
            yield local
            return
        with scratch(f"ssmix-weights-{cell_id}-") as folder:
            if not self.storage.get_folder(key, folder):
                raise FileNotFoundError(f"{self.url}/{key}: no weights stored")
            yield folder

    # ---------------------------------------------------------------------------- retention

    def release(self, cell: Cell, keep_best_model: bool) -> None:
        """After a cell's result is written: drop its working files. Phase 1 keeps its best
        weights (phase 2 starts from them); phase 2 keeps its own only when asked."""
        work = self.key(cell.id, "work")
        keep = {"phase1"} if cell.kind == "phase1" else ({"phase2"} if keep_best_model else set())
        for entry in self.storage.children(work):
            if entry in keep:
                for inner in self.storage.children(f"{work}/{entry}"):
                    if inner != "best":
                        self.storage.delete(f"{work}/{entry}/{inner}")
            else:
                self.storage.delete(f"{work}/{entry}")

    def cell_bytes(self, cell_id: str) -> int:
        return self.storage.size(self.key(cell_id))

    def total_bytes(self) -> int:
        return self.storage.size()

    def snapshot(self) -> "StoreSnapshot":
        """Every cell's result, weights and bytes as they are now, read at once: what a status or
        a summary shows of thousands of cells costs one listing and one batched read (on object
        storage, a few requests instead of three per cell)."""
        sizes = self.storage.listing("cells")
        wanted = [key for key in sizes if key.count("/") == 2 and key.endswith(("/result.json", "/failure.json"))]
        return StoreSnapshot(self.storage, sizes, self.storage.read_many(wanted))


class StoreSnapshot(ResultStore):
    """A read-only view of a store at one moment (``ResultStore.snapshot``): results, weights and
    bytes answered from what was read; a cell finished afterwards is not in it."""

    def __init__(self, storage: Storage, sizes: dict[str, int], objects: dict[str, bytes]):
        super().__init__(storage)
        self._sizes, self._objects = sizes, objects
        self._cell_bytes: dict[str, int] = {}
        for key, size in sizes.items():
            cell_id = key.split("/", 2)[1] if key.count("/") >= 2 else ""
            self._cell_bytes[cell_id] = self._cell_bytes.get(cell_id, 0) + size

    def _read(self, key: str) -> CellResult | None:
        data = self._objects.get(key)
        return None if data is None else CellResult.from_json(json.loads(data))

    def has_weights(self, cell_id: str, phase: str = "phase1") -> bool:
        return self.key(cell_id, f"work/{phase}/best/config.json") in self._sizes

    def cell_bytes(self, cell_id: str) -> int:
        return self._cell_bytes.get(cell_id, 0)

    def write_result(self, cell: Cell, result: CellResult) -> None:
        raise TypeError("a StoreSnapshot is read-only: write through the ResultStore it was taken from")


@dataclass
class Collected:
    keys: list[str]
    bytes: int


def collect_garbage(store: ResultStore, cells: list[Cell], keep_best_model: bool = False,
                    dry_run: bool = False, drivers_alive: bool = False, plan_complete: bool = True) -> Collected:
    """Remove what no cell of ``cells`` needs: folders of cells not in the plan (other settings,
    older code), phase-1 weights whose phase-2 cells all have results, working files of finished
    cells (phase-2 weights too, unless ``keep_best_model``), Tune's trial folders, and the staged
    data and model once every cell of a complete plan is done (a new seed stages them again).
    Refuses while a driver of the sweep runs (``drivers_alive``: what the invocation records say)."""
    storage = store.storage
    planned = {c.id: c for c in cells}
    waiting = {c.phase1_id for c in cells if c.kind == "phase2" and store.done(c.id) is None}
    doomed: list[str] = []
    for name in storage.children("cells"):
        if not CELL_ID.match(name):
            continue                                       # the invocation records, locks
        key = store.key(name)
        cell = planned.get(name)
        if cell is None:
            doomed.append(key)
            continue
        if store.done(cell.id) is None:
            continue                                       # unfinished: its checkpoint resumes it
        needed = cell.id in waiting if cell.kind == "phase1" else keep_best_model
        if storage.children(store.key(cell.id, "work")) and not needed:
            doomed.append(store.key(cell.id, "work"))
    doomed += [f"tune/{name}" for name in storage.children("tune")]
    if plan_complete and all(store.done(c.id) is not None for c in cells):
        doomed += [f"staged/{name}" for name in storage.children("staged")]
    size = sum(storage.size(k) for k in doomed)
    if not dry_run:
        if drivers_alive:
            raise Busy(f"a sweep is running on {store.url}: gc waits until it ends")
        try:
            with store.storage.lock(".active", blocking=False) if storage.local_path("") is not None else nullcontext():
                for key in doomed:
                    storage.delete(key)
        except Busy:
            raise Busy(f"a sweep is running on {store.url}: gc waits until it ends") from None
    return Collected(doomed, size)
