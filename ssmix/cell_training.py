"""Training one cell of a sweep into its store: the fine-tune (``ssmix.finetune``) of its phase,
the stored result with its timing and placement, what storage keeps of it, and its mix page. The
Tune trainable (``trainables.cell``) and the in-process runner (``ssmix.sweep.local``) both train
through ``train_stored_cell``; only where the cell runs and how it reports differ.
"""

from __future__ import annotations

import json
import os
import signal
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable

from ssmix.config import TrialConfig
from ssmix.finetune import finetune
from ssmix.sweep.cells import Cell, CellResult, Placement, Timing
from ssmix.sweep.progress import StepWriter
from ssmix.sweep.store import MIX_PAGE, MIX_PAGE_ERROR, MIX_RECORD, ResultStore

FAULT_FILE = "inject-fault"


def maybe_inject_fault(store: ResultStore, cell_id: str) -> None:
    """Fault injection for the resilience tests: a file ``inject-fault`` in the cell's folder on
    storage makes the trial fail once, right after its next evaluation's report: ``raise`` raises,
    ``kill`` SIGKILLs the worker process. The file is removed first, so the retry runs clean.
    ``hold`` keeps the trial waiting there until the test removes the file: a test then acts
    while the cell is surely mid training, however fast this machine trains."""
    mode = store.read_cell_file(cell_id, FAULT_FILE)
    if mode is None:
        return
    if mode.strip() == "hold":
        while store.read_cell_file(cell_id, FAULT_FILE) is not None:
            time.sleep(0.05)
        return
    store.delete_cell_file(cell_id, FAULT_FILE)
    if (mode.strip() or "raise") == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError(f"injected fault ({FAULT_FILE} in {store.url}/{store.key(cell_id)})")


@dataclass(frozen=True)
class Claimed:
    """A claimed cell's result, and whether this attempt trained it (False: another driver, or a
    leftover trial of a killed one, stored it while this one waited for the claim)."""
    result: CellResult
    trained_here: bool


def train_claimed_cell(cell: Cell, store: ResultStore, report: Callable[[dict], None], placement: Placement,
                       threads: int, keep_best_model: bool = False, started: float | None = None,
                       inputs: dict | None = None, claimed: Callable[[], None] | None = None) -> Claimed:
    """Claim the cell and train it, unless another driver (or a leftover trial of a killed one)
    stored its result while this one waited for the claim. Trained with ``threads`` torch
    threads, the CPUs a Ray trial of it gets, so that its result is the same bit for bit
    whichever runner trained it. ``claimed()`` is called once the cell is this attempt's to train."""
    import torch

    with store.claim(cell.id) as claim:
        if not store.needs_training(cell):
            return Claimed(store.done(cell.id), trained_here=False)
        if claimed is not None:
            claimed()
        previous = torch.get_num_threads()
        torch.set_num_threads(max(1, threads))
        try:
            return Claimed(train_stored_cell(cell, store, report, placement, keep_best_model, started,
                                             claim=claim, inputs=inputs), trained_here=True)
        finally:
            torch.set_num_threads(previous)


def train_stored_cell(cell: Cell, store: ResultStore, report: Callable[[dict], None], placement: Placement,
                      keep_best_model: bool = False, started: float | None = None, claim=None,
                      inputs: dict | None = None) -> CellResult:
    """Train ``cell`` on ``placement.device``, calling ``report(evaluation)`` (a JSON-able dict)
    after every evaluation; store and return its result. ``started``: when the attempt began
    (``time.perf_counter()``), for the stored timing. ``claim``: the cell's claim, checked at each
    evaluation (a lease that ran out stops the attempt: another driver has the cell now).
    ``inputs``: trial settings that point at this machine's copies of the sweep's staged data and
    model (``ssmix.staging.local_inputs``)."""
    started = time.perf_counter() if started is None else started
    started_at = time.time() - (time.perf_counter() - started)
    store.log_attempt(cell.id, f"{started_at:.3f} {time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime(started_at))} "
                               f"pid {os.getpid()}")
    # Neither the device nor where the inputs were staged is in the cell's id.
    trial = TrialConfig(**{**cell.trial, "device": placement.device, **(inputs or {})})
    with store.workspace(cell.id) as work, ExitStack() as stack:

        def on_evaluation(evaluation):
            store.save_work(cell.id, work)          # the checkpoint the fine-tune just saved
            if claim is not None:
                claim.check()
            report({k: v for k, v in evaluation.__dict__.items() if k != "checkpoint_dir"})
            maybe_inject_fault(store, cell.id)

        on_step = StepWriter(store, cell.id)      # the driver shows step / total from it
        if cell.kind == "phase1":
            outcome = finetune(trial, work, phases=("phase1",), callback=on_evaluation, on_step=on_step)
        else:
            first = store.finished(cell.phase1_id)
            if first is None:
                raise RuntimeError(f"phase-1 cell {cell.phase1_id} has no result: phase 2 cannot start")
            weights = stack.enter_context(store.weights(cell.phase1_id))
            outcome = finetune(trial, work, phases=("phase2",), phase1_checkpoint=weights,
                               phase1_result=first.outcome.phase1, callback=on_evaluation, on_step=on_step,
                               keep_phase2_best=keep_best_model,
                               on_mix=lambda *made: _keep_mixes(store, cell.id, *made))
        store.save_work(cell.id, work)              # its best weights, before the result says it is done
    phase = outcome.phase1 if cell.kind == "phase1" else outcome.phase2
    timing = Timing(trial_wall_seconds=time.perf_counter() - started,   # this attempt, from start to result
                    started_at=started_at, finished_at=time.time(),    # wall clock (the schedule, as it ran)
                    train_seconds=phase.train_seconds, eval_seconds=phase.eval_seconds)
    result = CellResult.finished(outcome, timing, placement)
    store.write_result(cell, result)
    store.release(cell, keep_best_model=keep_best_model)
    _draw_mix_page(store, cell.id, trial)
    return result


def _keep_mixes(store: ResultStore, cell_id: str, *made) -> None:
    """The mixes of phase 2's first step, as its step made them (kept across a retry)."""
    from ssmix.show import record_mixes

    if store.read_cell_file(cell_id, MIX_RECORD) is None:
        store.write_cell_file(cell_id, MIX_RECORD, json.dumps(record_mixes(*made)))


def _draw_mix_page(store: ResultStore, cell_id: str, trial: TrialConfig) -> None:
    """The mix page from the recorded mixes, once the result is safe: a page that cannot be drawn
    is a warning on the cell's run (``MIX_PAGE_ERROR``), never a failed cell."""
    record = store.read_cell_file(cell_id, MIX_RECORD)
    if record is None:
        return
    try:
        from ssmix.show import recorded_mix_page

        protocol = "" if trial.protocol == "ours" else f", protocol {trial.protocol}"
        page = recorded_mix_page(json.loads(record), trial.model, f"{trial.method} on {trial.task_name} "
                                 f"(λ0 = {trial.mix_ratio}{protocol}): the first step of phase 2")
        store.write_cell_file(cell_id, MIX_PAGE, page)
    except Exception as err:   # a display problem must not lose a trained cell
        store.write_cell_file(cell_id, MIX_PAGE_ERROR,
                              f"the mix page could not be drawn: {type(err).__name__}: {err}"[:2000])


def run_sweep_in_process(sweep, sweep_file: str, staged=None) -> int:
    """``ssmix sweep run --in-process``: the sweep's cells trained here, one at a time
    (``ssmix.sweep.local``), recorded in MLflow as a Ray run records them. Needs no Ray.
    ``staged``: the sweep's staged inputs (``ssmix.staging.Staged``)."""
    import socket

    from ssmix.device import resolve_device
    from ssmix.staging import local_inputs
    from ssmix.sweep.invocation import Invocation
    from ssmix.sweep.local import run_in_process
    from ssmix.sweep.signals import stops_as_interrupts
    from ssmix.tracking import tracker_for

    store = ResultStore.for_sweep(sweep)

    def train(cell: Cell, report, claimed) -> bool:
        wanted = sweep.resources.for_task(cell.task)
        device = resolve_device(cell.trial["device"], gpus_given=bool(wanted["GPU"]),
                                cpu_fallback=sweep.resources.cpu_fallback)
        inputs = local_inputs(staged, store.storage, cell.trial) if staged is not None else None
        return train_claimed_cell(cell, store, report, Placement(hostname=socket.gethostname(), device=device),
                                  threads=int(wanted["CPU"]), keep_best_model=sweep.keep_best_model,
                                  inputs=inputs, claimed=claimed).trained_here

    # Ctrl-C and SIGTERM end the invocation as killed, as on Ray.
    with store.active(), stops_as_interrupts():
        return run_in_process(Invocation(sweep, sweep_file, store, tracker_for(sweep)), train)
