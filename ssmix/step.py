"""One training step of any method (docs/method.md §2).

A step splits the batch into halves A and B (A[i] pairs with B[i]) and minimises the mean of
``CE(A), CE(B), mixloss(mix(A, B)), mixloss(mix(B, A))``. Both mix directions are computed in
one pass: the "pair batch" is A followed by B, and its partner rows are B followed by A.

SSMix's saliency comes for free: the clean half of the loss is backpropagated first, the
embedding gradients it leaves are the saliency, then the mixed half is built and
backpropagated. The parameter gradients are those of the four-term mean, and SSMix costs what
EmbedMix costs. ``saliency="separate"`` instead runs the reference code's extra forward and
backward per side, for comparison.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssmix import mixing
from ssmix.encoder import (
    capture_embeddings,
    default_tmix_layers,
    encoder_layers,
    hidden_mix,
    model_inputs,
    saliency_from_gradient,
)
from ssmix.config import default
from ssmix.segments import content_mask, find_segments
from ssmix.methods import Method, get_method


@dataclass(frozen=True)
class MixupSettings:
    """Everything a step needs besides the model and the batch.

    mix_ratio:     λ0 of the input-level mixers, in (0, 1]
    hidden_alpha:  α of λ' ~ Beta(α, α) for EmbedMix and TMix
    tmix_layers:   1-based layers TMix draws from; None = {7, 9, 12} scaled to the model's depth
    saliency:      "free" (from the clean loss's backward) or "separate" (the reference code's way)
    unk_token_id:  the tokenizer's unknown token, needed by ``unk``
    cap_span_by_b, tie, nosal_start: the span rules where the reference code differs (docs/method.md §1;
                   ``ssmix.config.TrialSettings`` says what each does)
    """

    mix_ratio: float = default("mix_ratio")
    hidden_alpha: float = default("hidden_alpha")
    tmix_layers: tuple[int, ...] | None = default("tmix_layers")
    saliency: Literal["free", "separate"] = default("saliency")
    unk_token_id: int | None = None
    cap_span_by_b: bool = default("cap_span_by_b")
    tie: Literal["first", "last"] = default("tie")
    nosal_start: Literal["independent", "shared"] = default("nosal_start")
    pair_saliency: Literal["whole", "per_segment"] = default("pair_saliency")

    def __post_init__(self):
        mixing._check_ratio(self.mix_ratio)
        if not self.hidden_alpha > 0:
            raise ValueError(f"hidden_alpha must be > 0, got {self.hidden_alpha!r}")
        if self.saliency not in ("free", "separate"):
            raise ValueError(f"saliency must be 'free' or 'separate', got {self.saliency!r}")


@dataclass(frozen=True)
class MixPlan:
    """One step's mixed half: the inputs to run, the label share of the partner per row, and,
    for hidden mixup, where and how much to mix."""

    inputs: dict[str, torch.Tensor]
    lam: torch.Tensor                       # (k,) share of the label that goes to the partner
    hidden_layer: int | None = None         # 0 = embeddings, k = after encoder layer k
    hidden_weight: float | None = None      # λ', weight of the row itself
    mix: mixing.MixResult | None = None     # the input-level result, for display


@dataclass(frozen=True)
class StepResult:
    loss: float
    clean_loss: float
    mixed_loss: float | None
    mean_lam: float | None
    examples: int


# Shown what an input-level step mixed: (pair batch [A; B], partner rows, the plan, the
# saliency or None, the pair batch's labels). ssmix.show.record_mixes keeps it for the mix page.
OnMix = Callable[[dict, torch.Tensor, MixPlan, "torch.Tensor | None", torch.Tensor], None]


def partner_rows(pairs: int, device=None) -> torch.Tensor:
    """(2·pairs,) the partner of each row of the pair batch [A; B]: B[i] for A[i], A[i] for B[i]."""
    return torch.cat([torch.arange(pairs, 2 * pairs, device=device), torch.arange(0, pairs, device=device)])


def sample_hidden_weight(generator: torch.Generator | None, alpha: float) -> float:
    """λ' ~ Beta(α, α), λ' = max(λ', 1 - λ'), one per step as in the reference code. Drawn with
    numpy seeded from the torch generator, so the generator is the only source of randomness."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    weight = float(np.random.default_rng(seed).beta(alpha, alpha))
    return max(weight, 1.0 - weight)


def choose_tmix_layer(model: nn.Module, settings: MixupSettings, generator: torch.Generator | None) -> int:
    layers = settings.tmix_layers or default_tmix_layers(len(encoder_layers(model)))
    index = int(torch.randint(0, len(layers), (1,), generator=generator).item())
    return int(layers[index])


def plan_mix(method: Method, model: nn.Module, pair: dict[str, torch.Tensor], partner: torch.Tensor,
             settings: MixupSettings, generator: torch.Generator | None,
             saliency: torch.Tensor | None = None) -> MixPlan:
    """Build the mixed half [mix(A, B); mix(B, A)] of a step for ``method``."""
    other = {key: value[partner] for key, value in pair.items()}
    if method.kind == "saliency_span":
        result = mixing.ssmix(pair, other, saliency, saliency[partner], settings.mix_ratio,
                              cap_span_by_b=settings.cap_span_by_b, tie=settings.tie)
    elif method.name == "ssmix-nosal":
        result = mixing.random_span(pair, other, settings.mix_ratio, generator, start=settings.nosal_start,
                                    cap_span_by_b=settings.cap_span_by_b)
    elif method.name == "ssmix-nosal-nospan":
        result = mixing.random_tokens(pair, other, settings.mix_ratio, generator)
    elif method.kind == "unk":
        if settings.unk_token_id is None:
            raise ValueError("method 'unk' needs MixupSettings.unk_token_id (the tokenizer's unk_token_id)")
        result = mixing.unk(pair, settings.mix_ratio, settings.unk_token_id, generator)
    elif method.kind == "hidden":
        weight = sample_hidden_weight(generator, settings.hidden_alpha)
        layer = 0 if method.name == "embedmix" else choose_tmix_layer(model, settings, generator)
        lam = torch.full((partner.shape[0],), 1.0 - weight, device=partner.device)
        return MixPlan(inputs=model_inputs(pair), lam=lam, hidden_layer=layer, hidden_weight=weight)
    else:
        raise ValueError(f"method {method.name!r} has no mixed half")
    return MixPlan(inputs=model_inputs(result.batch), lam=result.lam, mix=result)


def mixed_logits(model: nn.Module, plan: MixPlan, partner: torch.Tensor) -> torch.Tensor:
    if plan.hidden_layer is None:
        return model(**plan.inputs).logits
    with hidden_mix(model, partner, plan.hidden_weight, plan.hidden_layer, plan.inputs["attention_mask"]):
        return model(**plan.inputs).logits


def mixup_loss(logits: torch.Tensor, labels: torch.Tensor, partner_labels: torch.Tensor,
               lam: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``(1 - λ)·CE(logits, y) + λ·CE(logits, y_partner)``."""
    own = F.cross_entropy(logits.float(), labels, reduction="none")
    theirs = F.cross_entropy(logits.float(), partner_labels, reduction="none")
    lam = lam.to(own.dtype)
    return ((1 - lam) * own + lam * theirs).mean()


def separate_saliency(model: nn.Module, pair: dict[str, torch.Tensor], labels: torch.Tensor,
                      pairs: int) -> torch.Tensor:
    """The reference code's saliency: its own forward and backward for each side (A, then B)."""
    pieces = []
    for side in (slice(0, pairs), slice(pairs, 2 * pairs)):
        part = {key: value[side] for key, value in pair.items()}
        with capture_embeddings(model) as captured:
            loss = F.cross_entropy(model(**model_inputs(part)).logits.float(), labels[side])
        (grad,) = torch.autograd.grad(loss, captured.output)
        pieces.append(saliency_from_gradient(grad, part["special_tokens_mask"]))
    return torch.cat(pieces)


def segment_saliency(model: nn.Module, pair: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """The reference code's saliency of a pair (``pair_saliency="per_segment"``): each segment
    runs alone through the model as ``[CLS] segment [SEP]`` with the example's label, and its
    tokens' saliencies are put back at the segment's positions in the pair. (n, T)."""
    ids = pair["input_ids"]
    n, T = ids.shape
    seg = find_segments(content_mask(pair))
    padding = pair["attention_mask"] == 0
    pad_id = ids[padding][0] if padding.any() else torch.zeros((), dtype=ids.dtype, device=ids.device)
    out = torch.zeros(n, T, device=ids.device)
    for s in range(seg.count):
        start, length = seg.starts[s], seg.lengths[s]
        if not bool((length > 0).any()):
            continue
        L = int(length.max()) + 2
        j = torch.arange(L, device=ids.device).view(1, L)
        body = (j >= 1) & (j <= length.view(n, 1))
        source = (start.view(n, 1) + j - 1).clamp(0, T - 1)
        sep = ids.gather(1, (start + length).clamp(max=T - 1).view(n, 1))     # the token after the segment
        alone = torch.where(j == 0, ids[:, :1], torch.where(body, ids.gather(1, source),
                            torch.where(j == length.view(n, 1) + 1, sep, pad_id)))
        inputs = {"input_ids": alone, "attention_mask": (j <= length.view(n, 1) + 1).long()}
        with capture_embeddings(model) as captured:
            loss = F.cross_entropy(model(**inputs).logits.float(), labels)
        (grad,) = torch.autograd.grad(loss, captured.output)
        saliency = saliency_from_gradient(grad, (~body).long())
        back = torch.zeros(n, T, device=ids.device).scatter_add(1, source, saliency * body)
        out = out + back * seg.masks[s]
    return out


def compute_gradients(model: nn.Module, batch: dict[str, torch.Tensor], labels: torch.Tensor,
                      method: str | Method, settings: MixupSettings | None = None,
                      generator: torch.Generator | None = None,
                      autocast_dtype: torch.dtype | None = None, on_mix: OnMix | None = None) -> StepResult:
    """Accumulate into ``.grad`` the gradient of the paper's loss for one batch.

    batch: (m, T) tensors with input_ids, attention_mask, special_tokens_mask [, token_type_ids];
    labels: (m,). With an odd m the last example takes part in the clean loss only.
    """
    method = get_method(method) if isinstance(method, str) else method
    settings = settings or MixupSettings()
    device_type = labels.device.type
    autocast = (lambda: torch.autocast(device_type, dtype=autocast_dtype)) if autocast_dtype else nullcontext
    inputs = model_inputs(batch)
    pairs = labels.shape[0] // 2
    if method.kind == "plain" or pairs == 0:
        with autocast():
            loss = F.cross_entropy(model(**inputs).logits.float(), labels)
        loss.backward()
        return StepResult(loss.item(), loss.item(), None, None, labels.shape[0])

    rows = 2 * pairs
    partner = partner_rows(pairs, labels.device)
    pair = {key: value[:rows] for key, value in batch.items()}
    per_segment = method.kind == "saliency_span" and settings.pair_saliency == "per_segment"
    free_saliency = method.kind == "saliency_span" and settings.saliency == "free" and not per_segment
    with capture_embeddings(model) if free_saliency else nullcontext() as captured, autocast():
        clean_loss = F.cross_entropy(model(**inputs).logits.float(), labels)

    saliency = None
    if free_saliency:
        (0.5 * clean_loss).backward()                  # leaves the embedding gradient behind
        saliency = captured.saliency(batch["special_tokens_mask"])[:rows]
    elif method.kind == "saliency_span":
        with autocast():
            saliency = (segment_saliency(model, pair, labels[:rows]) if per_segment
                        else separate_saliency(model, pair, labels[:rows], pairs))

    plan = plan_mix(method, model, pair, partner, settings, generator, saliency)
    if on_mix is not None and plan.mix is not None:
        on_mix(pair, partner, plan, saliency, labels[:rows])     # the mixes this step made, as made
    with autocast():
        mixed_loss = mixup_loss(mixed_logits(model, plan, partner), labels[:rows], labels[:rows][partner], plan.lam)
    if free_saliency:
        (0.5 * mixed_loss).backward()
    else:
        (0.5 * clean_loss + 0.5 * mixed_loss).backward()
    return StepResult(0.5 * (clean_loss.item() + mixed_loss.item()), clean_loss.item(), mixed_loss.item(),
                      plan.lam.mean().item(), labels.shape[0])


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
               labels: torch.Tensor, method: str | Method, settings: MixupSettings | None = None,
               generator: torch.Generator | None = None, scheduler=None, clip_norm: float | None = 1.0,
               autocast_dtype: torch.dtype | None = None, on_mix: OnMix | None = None) -> StepResult:
    """One optimiser step: gradients of the paper's loss, clipping *after* backward (the
    reference code clips before, which never clips the update), then the update."""
    optimizer.zero_grad(set_to_none=True)
    result = compute_gradients(model, batch, labels, method, settings, generator, autocast_dtype, on_mix)
    if clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return result
