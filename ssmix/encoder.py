"""Hooks into any HuggingFace encoder: saliency capture and hidden-level mixup.

No model code is copied: the embedding module and the encoder layers are found on the model,
and forward hooks read or replace their outputs (STYLE convention 3).

- ``capture_embeddings``: keeps the embedding layer's output and its gradient, from which the
  saliency of every token is read after a backward pass.
- ``hidden_mix``: while active, the model's forward replaces the hidden states after layer k
  (k = 0: the embedding output, EmbedMix; k >= 1: the output of encoder layer k, TMix) by
  ``lam * h + (1 - lam) * h[partner]``. Layers after the mixing point attend over the union of
  the two examples' attention masks (docs/method.md §1; the reference code uses the union for EmbedMix but
  A's own mask for TMix, we use the union for both).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn


def embedding_module(model: nn.Module) -> nn.Module:
    base = getattr(model, "base_model", model)
    module = getattr(base, "embeddings", None)
    if module is None:
        raise ValueError(f"cannot find the embedding module of {type(model).__name__}: "
                         "expected model.base_model.embeddings (BERT, RoBERTa, ELECTRA, DeBERTa, DistilBERT...)")
    return module


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    base = getattr(model, "base_model", model)
    for path in ("encoder.layer", "encoder.layers", "transformer.layer", "layers"):
        obj = base
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return obj
    raise ValueError(f"cannot find the encoder layers of {type(model).__name__}: expected "
                     "base_model.encoder.layer (BERT family) or base_model.transformer.layer (DistilBERT)")


def default_tmix_layers(num_layers: int) -> tuple[int, ...]:
    """The paper's {7, 9, 12} for 12 layers; the same relative depths for other models
    (1-based: layer k means "after encoder layer k")."""
    return tuple(sorted({max(1, math.ceil(k * num_layers / 12)) for k in (7, 9, 12)}))


def saliency_from_gradient(grad: torch.Tensor, special_tokens_mask: torch.Tensor) -> torch.Tensor:
    """Per-token L2 norm of an embedding gradient (n, T, H) -> (n, T), zero on special tokens
    and padding, divided by each example's max as the reference code does (order unchanged)."""
    norms = grad.detach().float().norm(dim=-1) * (special_tokens_mask == 0)
    return norms / norms.amax(dim=1, keepdim=True).clamp(min=1e-12)


@dataclass
class EmbeddingCapture:
    output: torch.Tensor | None = None

    def saliency(self, special_tokens_mask: torch.Tensor) -> torch.Tensor:
        if self.output is None or self.output.grad is None:
            raise RuntimeError("no embedding gradient captured: run a forward and a backward pass inside "
                               "capture_embeddings() first")
        return saliency_from_gradient(self.output.grad, special_tokens_mask)


@contextmanager
def capture_embeddings(model: nn.Module):
    """Keep the embedding output of the next forward pass, with its gradient after backward."""
    capture = EmbeddingCapture()

    def hook(module, args, output):
        if output.requires_grad:
            output.retain_grad()
        capture.output = output

    handle = embedding_module(model).register_forward_hook(hook)
    try:
        yield capture
    finally:
        handle.remove()


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The keys a HF encoder's forward takes (the mixers' special_tokens_mask is not one)."""
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}


def _union_attention(layer_mask, union_keys: torch.Tensor):
    """Open the keys of ``union_keys`` (R, T) in a layer-level attention mask of whatever format
    the model built: additive float (0 = attend) or bool (True = attend), broadcast to
    (R, heads or 1, Tq, T); None means nothing was masked in the first place."""
    if layer_mask is None:
        return None
    keys = union_keys.view(union_keys.shape[0], 1, 1, -1)
    if layer_mask.dtype == torch.bool:
        return layer_mask | keys
    return torch.where(keys, torch.zeros((), dtype=layer_mask.dtype, device=layer_mask.device), layer_mask)


@dataclass
class _MaskSwap:
    union_keys: torch.Tensor
    cache: dict = field(default_factory=dict)

    def __call__(self, module, args, kwargs):
        if "attention_mask" in kwargs:
            kwargs["attention_mask"] = self._swap(kwargs["attention_mask"])
        elif len(args) > 1:
            args = (args[0], self._swap(args[1])) + tuple(args[2:])
        return args, kwargs

    def _swap(self, mask):
        key = id(mask)
        if key not in self.cache:  # every layer gets the same mask object: build once
            self.cache[key] = (mask, _union_attention(mask, self.union_keys))
        return self.cache[key][1]


@contextmanager
def hidden_mix(model: nn.Module, partner: torch.Tensor, lam: torch.Tensor, layer: int,
               attention_mask: torch.Tensor):
    """Mix hidden states during the forward passes made inside this context.

    partner: (R,) long, the row each row is mixed with; lam: (R,) or scalar, weight of the row
    itself; layer: 0 for the embedding output, k >= 1 for the output of encoder layer k;
    attention_mask: (R, T) the batch's own mask (used to build the union mask).
    """
    layers = encoder_layers(model)
    if not 0 <= layer <= len(layers):
        raise ValueError(f"mix layer must be in 0..{len(layers)} for this {len(layers)}-layer model, got {layer}")
    own = attention_mask != 0
    union_keys = own | own[partner]
    # A scalar λ' stays a CPU 0-dim tensor (an operand the kernel takes by value): copying it to
    # the device would wait for the device.
    lam = torch.as_tensor(lam, dtype=torch.float32)
    if lam.dim():
        lam = lam.to(attention_mask.device)

    def mix(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        weight = lam.to(hidden.dtype).reshape(-1, *([1] * (hidden.dim() - 1))) if lam.dim() else lam.to(hidden.dtype)
        mixed = weight * hidden + (1 - weight) * hidden[partner]
        return (mixed,) + tuple(output[1:]) if isinstance(output, tuple) else mixed

    target = embedding_module(model) if layer == 0 else layers[layer - 1]
    handles = [target.register_forward_hook(mix)]
    swap = _MaskSwap(union_keys)
    for later in list(layers)[layer:]:
        handles.append(later.register_forward_pre_hook(swap, with_kwargs=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
