"""The Tune function trainable for one cell: wiring only. The training is
``ssmix.cell_training``; claims, results and retention are ``ssmix.sweep.store``.

Resuming needs no Tune checkpoint: the fine-tune keeps its latest checkpoint in the cell's own
folder on the sweep's (shared) storage and continues from it when the trial is retried, so Tune's
trial folders never hold a copy of the model.
"""

from __future__ import annotations

import json
import socket
import time

import ray
from ray import tune

from ssmix.device import resolve_device
from ssmix.staging import Staged, local_inputs
from ssmix.sweep.cells import Cell, Placement
from ssmix.sweep.storage import open_storage
from ssmix.sweep.store import ResultStore

# The trial's last report says whether it trained the cell (0: another driver stored the result
# while it waited for the claim), so each driver counts only the cells it trained.
TRAINED_HERE = "trained_here"


def placement(trial_device: str, cpu_fallback: bool) -> Placement:
    """Where this trial runs and on what: the node, the GPUs Ray assigned (Ray sets
    CUDA_VISIBLE_DEVICES to them, so "cuda" is the assigned card), and the device it trains on."""
    gpu_ids = [str(i) for i in ray.get_gpu_ids()]
    context = ray.get_runtime_context()
    node_id = context.get_node_id()
    # The address the node joined the cluster with (what `ray status` and the dashboard show);
    # ray.util.get_node_ip_address() would guess this machine's outward address instead.
    node_ip = next((n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node_id),
                   ray.util.get_node_ip_address())
    return Placement(hostname=socket.gethostname(), device=resolve_device(trial_device, bool(gpu_ids), cpu_fallback),
                     node_id=node_id, node_ip=node_ip, gpu_ids=gpu_ids, assigned=context.get_assigned_resources())


def train_cell(config: dict) -> None:
    """Train one cell (phase 1 of a (task, seed), or one phase-2 trial), reporting after every
    evaluation. ``config``: the cell, the sweep's folder, keep_best_model, cpu_fallback.

    Tune reuses this worker process for the next trial (a fresh one costs seconds of imports and
    first calls per cell): the claim is released before the last report, which blocks until Tune
    moves on, and what the trial allocated is handed back before the next one starts."""
    # Imported where the trial runs: the driver, which only hands this function to Tune, then
    # loads no torch (seconds of imports and hundreds of MB per driver).
    from ssmix.cell_training import train_claimed_cell

    started = time.perf_counter()
    cell = Cell.from_dict(config["cell"])
    store = ResultStore(open_storage(config["sweep_url"]))
    try:
        where = placement(cell.trial["device"], bool(config.get("cpu_fallback")))
        inputs = local_inputs(Staged.from_dict(config.get("staged")), store.storage, cell.trial)
        claimed = train_claimed_cell(cell, store, _report, where, threads=int(where.assigned.get("CPU", 1)),
                                     keep_best_model=bool(config.get("keep_best_model")), started=started,
                                     inputs=inputs)
    finally:
        _give_back_memory()
    result = claimed.result
    tune.report({"selection_accuracy": result.scores.selection if result.is_finished else float("nan"), "done": 1,
                 TRAINED_HERE: int(claimed.trained_here)})


def _report(evaluation: dict) -> None:
    tune.report({"selection_accuracy": evaluation["selection"], "global_step": evaluation["global_step"],
                 "phase_step": evaluation["phase_step"], "evaluation_json": json.dumps(evaluation)})


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
