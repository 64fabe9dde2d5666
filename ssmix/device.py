"""The device a fine-tune trains on: the one answer to ``device: auto`` for ``ssmix train``, the
benchmarks, and a sweep's cells on either runner."""

from __future__ import annotations

import socket


def resolve_device(requested: str, gpus_given: bool | None = None, cpu_fallback: bool = False) -> str:
    """``requested`` unless it is "auto". Then, outside a sweep (``gpus_given`` None): CUDA when
    torch has it. In a sweep's cell: a cell given no GPU never touches one; a cell given a GPU
    trains on it (Ray sets CUDA_VISIBLE_DEVICES to the card it assigned), and where torch has no
    CUDA it fails at once, unless ``cpu_fallback`` (tests, laptops)."""
    import torch

    if requested != "auto":
        return requested
    if gpus_given is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not gpus_given:
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if cpu_fallback:
        return "cpu"
    raise RuntimeError(f"this trial was given a GPU but torch here has no CUDA (torch {torch.__version__} on "
                       f"{socket.gethostname()}): install a CUDA build of torch on the GPU nodes, or set "
                       f"resources.cpu_fallback: true to train on CPU")
