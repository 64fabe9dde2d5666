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
from pathlib import Path
from typing import Callable

from ssmix.config import TrialConfig
from ssmix.files import write_json
from ssmix.finetune import finetune
from ssmix.outcome import PhaseResult
from ssmix.sweep.plan import Cell
from ssmix.sweep.progress import StepWriter
from ssmix.sweep.store import MIX_PAGE, MIX_PAGE_ERROR, MIX_RECORD, ResultStore

FAULT_FILE = "inject-fault"


def maybe_inject_fault(cell_dir: Path) -> None:
    """Fault injection for the resilience tests: a file ``inject-fault`` in the cell's directory
    makes the trial fail once, right after its next evaluation's report: ``raise`` raises,
    ``kill`` SIGKILLs the worker process. The file is removed first, so the retry runs clean."""
    trigger = cell_dir / FAULT_FILE
    if not trigger.exists():
        return
    mode = trigger.read_text().strip() or "raise"
    trigger.unlink()
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError(f"injected fault ({FAULT_FILE} in {cell_dir})")


def train_stored_cell(cell: Cell, store: ResultStore, report: Callable[[dict], None], placement: dict,
                      keep_best_model: bool = False, started: float | None = None) -> dict:
    """Train ``cell`` on ``placement["device"]``, calling ``report(evaluation)`` (a JSON-able dict)
    after every evaluation; write and return its result. ``started``: when the attempt began
    (``time.perf_counter()``), for the stored timing."""
    started = time.perf_counter() if started is None else started
    started_at = time.time() - (time.perf_counter() - started)
    work = store.work_dir(cell.id)
    work.mkdir(parents=True, exist_ok=True)
    with open(store.cell_dir(cell.id) / "attempts.log", "a") as log:   # one line per training attempt
        log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} pid {os.getpid()}\n")
    trial = TrialConfig(**{**cell.trial, "device": placement["device"]})   # the device is not in the cell's id

    def on_evaluation(evaluation):
        report({k: v for k, v in evaluation.__dict__.items() if k != "checkpoint_dir"})
        maybe_inject_fault(store.cell_dir(cell.id))

    on_step = StepWriter(store.cell_dir(cell.id))   # the driver shows step / total from it
    if cell.kind == "phase1":
        result = finetune(trial, work, phases=("phase1",), callback=on_evaluation, on_step=on_step)
    else:
        first = store.finished(cell.phase1_id)
        if first is None:
            raise RuntimeError(f"phase-1 cell {cell.phase1_id} has no result: phase 2 cannot start")
        result = finetune(trial, work, phases=("phase2",), phase1_checkpoint=store.best_weights(cell.phase1_id),
                          phase1_result=PhaseResult(**first["phase1"]), callback=on_evaluation, on_step=on_step,
                          keep_phase2_best=keep_best_model,
                          on_mix=lambda *made: _keep_mixes(store.cell_dir(cell.id), *made))
    phase = result.phase1 if cell.kind == "phase1" else result.phase2
    stored = {**result.to_json(), "timing": {
        "trial_wall_seconds": time.perf_counter() - started,   # this attempt, from start to result
        "started_at": started_at, "finished_at": time.time(),   # wall clock (the schedule, as it ran)
        "train_seconds": phase.train_seconds, "eval_seconds": phase.eval_seconds}, "placement": placement}
    store.write_result(cell, stored)
    store.release(cell, keep_best_model=keep_best_model)
    _draw_mix_page(store.cell_dir(cell.id), trial)
    return stored


def _keep_mixes(cell_dir: Path, *made) -> None:
    """The mixes of phase 2's first step, as its step made them (kept across a retry)."""
    from ssmix.show import record_mixes

    if not (cell_dir / MIX_RECORD).exists():
        write_json(cell_dir / MIX_RECORD, record_mixes(*made))


def _draw_mix_page(cell_dir: Path, trial: TrialConfig) -> None:
    """The mix page from the recorded mixes, once the result is safe: a page that cannot be drawn
    is a warning on the cell's run (``MIX_PAGE_ERROR``), never a failed cell."""
    record = cell_dir / MIX_RECORD
    if not record.exists():
        return
    try:
        from ssmix.show import write_recorded_mix_page

        protocol = "" if trial.protocol == "ours" else f", protocol {trial.protocol}"
        write_recorded_mix_page(json.loads(record.read_text()), trial.model, cell_dir / MIX_PAGE,
                                f"{trial.method} on {trial.task_name} (λ0 = {trial.mix_ratio}{protocol}): "
                                f"the first step of phase 2")
    except Exception as err:   # a display problem must not lose a trained cell
        (cell_dir / MIX_PAGE_ERROR).write_text(f"the mix page could not be drawn: {type(err).__name__}: {err}"[:2000])


def run_sweep_in_process(sweep, sweep_file: str) -> int:
    """``ssmix sweep run --in-process``: the sweep's cells trained here, one at a time
    (``ssmix.sweep.local``), recorded in MLflow as a Ray run records them."""
    import socket

    import torch

    from ssmix.sweep.invocation import Invocation
    from ssmix.sweep.local import run_in_process
    from ssmix.tracking import check_tracking_uri, tracker_for
    from ssmix.sweep.preflight import preflight
    from trainables.propose import tpe_proposal
    from trainables.signals import TRACKING_PATIENCE, scoped_environ, stops_as_interrupts

    check_tracking_uri(sweep.tracking)
    preflight(sweep, None)
    store = ResultStore(sweep.sweep_dir())
    store.root.mkdir(parents=True, exist_ok=True)

    def train(cell: Cell, report) -> None:
        device = cell.trial["device"]
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() and sweep.resources.gpu else "cpu"
        with store.claim(cell.id):
            if store.result(cell.id) is None or (cell.kind == "phase1" and not store.best_weights(cell.id).is_dir()):
                # The threads a Ray trial of this cell gets (its CPUs), so that the result is the
                # same bit for bit whichever runner trained it.
                threads = torch.get_num_threads()
                torch.set_num_threads(max(1, int(sweep.resources.for_task(cell.task)["CPU"])))
                try:
                    train_stored_cell(cell, store, report, {"hostname": socket.gethostname(), "device": device},
                                      keep_best_model=sweep.keep_best_model)
                finally:
                    torch.set_num_threads(threads)

    # Ctrl-C and SIGTERM end the invocation as killed, as on Ray; MLflow's calls as patient.
    with store.active(), stops_as_interrupts(), scoped_environ(**TRACKING_PATIENCE):
        return run_in_process(Invocation(sweep, sweep_file, store, tracker_for(sweep)), train, propose=tpe_proposal)
