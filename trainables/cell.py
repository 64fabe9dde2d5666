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
from pathlib import Path

import ray
import torch
from ray import tune

from ssmix.cell_training import train_stored_cell
from ssmix.sweep.plan import Cell
from ssmix.sweep.store import ResultStore


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
    evaluation. ``config``: the cell, the sweep's folder, keep_best_model, cpu_fallback.

    Tune reuses this worker process for the next trial (a fresh one costs seconds of imports and
    first calls per cell): the claim is released before the last report, which blocks until Tune
    moves on, and what the trial allocated is handed back before the next one starts."""
    started = time.perf_counter()
    cell = Cell.from_dict(config["cell"])
    store = ResultStore(Path(config["sweep_dir"]))
    try:
        with store.claim(cell.id):
            done = store.result(cell.id)
            weights_missing = cell.kind == "phase1" and not store.best_weights(cell.id).is_dir()
            if done is None or weights_missing:
                where = placement(cell.trial["device"], bool(config.get("cpu_fallback")))
                torch.set_num_threads(max(1, int(where["assigned"].get("CPU", 1))))
                done = train_stored_cell(cell, store, _report, where, bool(config.get("keep_best_model")), started)
            # else another sweep trained it while this trial waited for the claim
    finally:
        _give_back_memory()
    tune.report({"selection_accuracy": done.get("best_selection", float("nan")), "done": 1})


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
