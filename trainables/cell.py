"""The Tune function trainable for one cell: wiring only. The fine-tune is ``ssmix.finetune``;
claims, results and retention are ``ssmix.sweep.store``.

Resuming needs no Tune checkpoint: the fine-tune keeps its latest checkpoint in the cell's own
folder on the sweep's (shared) storage and continues from it when the trial is retried, so Tune's
trial folders never hold a copy of the model.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import ray
import torch
from ray import tune

from ssmix.config import TrialConfig
from ssmix.finetune import PhaseResult, finetune
from ssmix.sweep.plan import Cell
from ssmix.sweep.progress import StepWriter
from ssmix.files import write_json
from ssmix.sweep.store import MIX_PAGE, MIX_PAGE_ERROR, MIX_RECORD, ResultStore

FAULT_FILE = "inject-fault"


def _maybe_inject_fault(cell_dir: Path) -> None:
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


def placement(trial_device: str, cpu_fallback: bool) -> dict:
    """Where this trial runs and on what: the node, the GPUs Ray assigned (Ray sets
    CUDA_VISIBLE_DEVICES to them, so "cuda" is the assigned card), and the device it trains on.
    A trial given a GPU trains on it; one given none never touches a GPU."""
    gpu_ids = [str(i) for i in ray.get_gpu_ids()]
    device = trial_device
    if trial_device == "auto":
        device = "cpu"
        if gpu_ids and torch.cuda.is_available():
            device = "cuda"
        elif gpu_ids and not cpu_fallback:
            raise RuntimeError(f"Ray gave this trial GPU {', '.join(gpu_ids)} but torch here has no CUDA "
                               f"(torch {torch.__version__} on {socket.gethostname()}): install a CUDA build "
                               f"of torch on the GPU nodes, or set resources.cpu_fallback: true to train on CPU")
    context = ray.get_runtime_context()
    node_id = context.get_node_id()
    # The address the node joined the cluster with (what `ray status` and the dashboard show);
    # ray.util.get_node_ip_address() would guess this machine's outward address instead.
    node_ip = next((n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node_id),
                   ray.util.get_node_ip_address())
    return {"node_id": node_id, "node_ip": node_ip,
            "hostname": socket.gethostname(), "gpu_ids": gpu_ids, "device": device,
            "assigned": context.get_assigned_resources()}


def train_cell(config: dict) -> None:
    """Train one cell (phase 1 of a (task, seed), or one phase-2 trial), reporting after every
    evaluation. ``config``: the cell, the sweep's folder, cpus, keep_best_model, cpu_fallback.

    Tune reuses this worker process for the next trial (a fresh one costs seconds of imports and
    first calls per cell): the claim is released before the last report, which blocks until Tune
    moves on, and what the trial allocated is handed back before the next one starts."""
    started, started_at = time.perf_counter(), time.time()
    cell = Cell.from_dict(config["cell"])
    store = ResultStore(Path(config["sweep_dir"]))
    try:
        with store.claim(cell.id):
            done = store.result(cell.id)
            weights_missing = cell.kind == "phase1" and not store.best_weights(cell.id).is_dir()
            if done is None or weights_missing:
                done = _train(cell, store, config, started, started_at)
            # else another sweep trained it while this trial waited for the claim
    finally:
        _give_back_memory()
    tune.report({"selection_accuracy": done.get("best_selection", float("nan")), "done": 1})


def _give_back_memory() -> None:
    """A reused worker must not grow from trial to trial: collect the trial's objects and return
    freed heap pages to the system (glibc keeps them in per-thread arenas, and Tune runs each
    trial in a new thread)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass    # not glibc: nothing to trim


def _train(cell: Cell, store: ResultStore, config: dict, started: float, started_at: float) -> dict:
    work = store.work_dir(cell.id)
    work.mkdir(parents=True, exist_ok=True)
    with open(store.cell_dir(cell.id) / "attempts.log", "a") as log:   # one line per training attempt
        log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} pid {os.getpid()}\n")
    where = placement(cell.trial["device"], bool(config.get("cpu_fallback")))
    torch.set_num_threads(max(1, int(where["assigned"].get("CPU", 1))))
    trial = TrialConfig(**{**cell.trial, "device": where["device"]})   # the device is not in the cell's id

    def report(evaluation):
        payload = {k: v for k, v in evaluation.__dict__.items() if k != "checkpoint_dir"}
        tune.report({"selection_accuracy": evaluation.selection, "global_step": evaluation.global_step,
                     "phase_step": evaluation.phase_step, "evaluation_json": json.dumps(payload)})
        _maybe_inject_fault(store.cell_dir(cell.id))

    on_step = StepWriter(store.cell_dir(cell.id))   # the driver shows step / total from it
    if cell.kind == "phase1":
        result = finetune(trial, work, phases=("phase1",), callback=report, on_step=on_step)
    else:
        first = store.finished(cell.phase1_id)
        if first is None:
            raise RuntimeError(f"phase-1 cell {cell.phase1_id} has no result: phase 2 cannot start")
        result = finetune(trial, work, phases=("phase2",), phase1_checkpoint=store.best_weights(cell.phase1_id),
                          phase1_result=PhaseResult(**first["phase1"]), callback=report, on_step=on_step,
                          keep_phase2_best=bool(config.get("keep_best_model")),
                          on_mix=lambda *made: _keep_mixes(store.cell_dir(cell.id), *made))
    phase = result.phase1 if cell.kind == "phase1" else result.phase2
    stored = {**result.to_json(), "timing": {
        "trial_wall_seconds": time.perf_counter() - started,   # this attempt, from start to result
        "started_at": started_at, "finished_at": time.time(),   # wall clock (the schedule, as it ran)
        "train_seconds": phase.train_seconds, "eval_seconds": phase.eval_seconds}, "placement": where}
    store.write_result(cell, stored)
    store.release(cell, keep_best_model=bool(config.get("keep_best_model")))
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
