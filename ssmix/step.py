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
from ssmix.config import default
from ssmix.encoder import (
    capture_embeddings,
    default_tmix_layers,
    encoder_layers,
    hidden_mix,
    model_inputs,
    saliency_from_gradient,
)
from ssmix.methods import Method, get_method
from ssmix.segments import content_mask, cut_segments, find_segments


@dataclass(frozen=True)
class MixupSettings:
    """Everything a step needs besides the model and the batch.

    mix_ratio:     λ0 of the input-level mixers, in (0, 1]
    hidden_alpha:  α of λ' ~ Beta(α, α) for EmbedMix and TMix
    tmix_layers:   1-based layers TMix draws from; None = {7, 9, 12} scaled to the model's depth
    saliency:      "free" (from the clean loss's backward) or "separate" (the reference code's way)
    unk_token_id:  the tokenizer's unknown token, needed by ``unk``
    pad_token_id:  the tokenizer's padding token (what a cut copy is padded with)
    num_segments:  texts per input (1, or 2 for pairs), if known: then the step reads nothing back
                   from the device to find them
    cap_span_by_b, tie, nosal_start, pair_saliency, segment_max_tokens: the rules where the
                   reference code differs (docs/protocols.md; ``ssmix.config.TrialSettings``
                   says what each does)
    """

    mix_ratio: float = default("mix_ratio")
    hidden_alpha: float = default("hidden_alpha")
    tmix_layers: tuple[int, ...] | None = default("tmix_layers")
    saliency: Literal["free", "separate"] = default("saliency")
    unk_token_id: int | None = None
    pad_token_id: int = 0
    num_segments: int | None = None
    cap_span_by_b: bool = default("cap_span_by_b")
    tie: Literal["first", "last"] = default("tie")
    nosal_start: Literal["independent", "shared"] = default("nosal_start")
    pair_saliency: Literal["whole", "per_segment"] = default("pair_saliency")
    segment_max_tokens: int | None = default("segment_max_tokens")

    def __post_init__(self):
        mixing.check_ratio(self.mix_ratio)
        if not self.hidden_alpha > 0:
            raise ValueError(f"hidden_alpha must be > 0, got {self.hidden_alpha!r}")
        if self.saliency not in ("free", "separate"):
            raise ValueError(f"saliency must be 'free' or 'separate', got {self.saliency!r}")


@dataclass(frozen=True)
class MixSides:
    """What an input-level mixer is given, row by row: A (the pair batch, or its cut copy), the
    partner B each row takes from, and their saliency (None for a method without)."""

    a: dict[str, torch.Tensor]
    b: dict[str, torch.Tensor]
    saliency_a: torch.Tensor | None = None
    saliency_b: torch.Tensor | None = None


@dataclass(frozen=True)
class MixPlan:
    """One step's mixed half: the inputs to run, the label share of the partner per row, and,
    for hidden mixup, where and how much to mix."""

    inputs: dict[str, torch.Tensor]
    lam: torch.Tensor                       # (k,) share of the label that goes to the partner
    hidden_layer: int | None = None         # 0 = embeddings, k = after encoder layer k
    hidden_weight: float | None = None      # λ', weight of the row itself
    mix: mixing.MixResult | None = None     # the input-level result, for display
    sides: MixSides | None = None           # what the input-level mixer was given, for display


@dataclass(frozen=True)
class StepResult:
    """What a step computed, as 0-dim tensors on the step's device: reading them (``float()``)
    waits for the device, so a training loop reads them only where it logs."""

    loss: torch.Tensor                       # the step's loss, in float64
    clean_loss: torch.Tensor
    mixed_loss: torch.Tensor | None
    mean_lam: torch.Tensor | None
    examples: int


# Shown what an input-level step mixed: (the plan, partner rows, the pair batch's labels).
# ssmix.show.record_mixes keeps it for the mix page.
OnMix = Callable[[MixPlan, torch.Tensor, torch.Tensor], None]


def partner_rows(pairs: int, device=None) -> torch.Tensor:
    """(2·pairs,) the partner of each row of the pair batch [A; B]: B[i] for A[i], A[i] for B[i]."""
    return torch.cat([torch.arange(pairs, 2 * pairs, device=device), torch.arange(0, pairs, device=device)])


def _host_draw(generator: torch.Generator | None, high: int) -> int:
    """A draw in [0, high) that the host needs, from a CPU generator: reading it waits for no
    device (a generator on a device would make every step wait: refused)."""
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(f"the host's draws need a CPU generator, got one on {generator.device}: "
                         "pass host_generator=torch.Generator() next to the device's generator")
    return int(torch.randint(0, high, (1,), generator=generator).item())


def sample_hidden_weight(generator: torch.Generator | None, alpha: float) -> float:
    """λ' ~ Beta(α, α), λ' = max(λ', 1 - λ'), one per step as in the reference code. Drawn with
    numpy seeded from the torch generator, so the generator is the only source of randomness."""
    weight = float(np.random.default_rng(_host_draw(generator, 2**62)).beta(alpha, alpha))
    return max(weight, 1.0 - weight)


def choose_tmix_layer(model: nn.Module, settings: MixupSettings, generator: torch.Generator | None) -> int:
    layers = settings.tmix_layers or default_tmix_layers(len(encoder_layers(model)))
    return int(layers[_host_draw(generator, len(layers))])


def mix_sides(model: nn.Module, pair: dict[str, torch.Tensor], partner: torch.Tensor, labels: torch.Tensor,
              settings: MixupSettings, saliency: torch.Tensor | None) -> MixSides:
    """A and B for each row of the pair batch. With ``segment_max_tokens`` on pairs (the reference
    code), A is a copy with each segment cut (``cut_segments``); the clean loss, evaluation and
    B's saliency see the whole input. The reference cuts its A's length in place, so in the second
    direction (B's rows mixed with A) SSMix's window in A stays inside A's cut too: there B is
    A's cut copy, with the saliency of the whole A."""
    other = {key: value[partner] for key, value in pair.items()}
    pairs_of_texts = settings.num_segments == 2 or (settings.num_segments is None
                                                    and find_segments(content_mask(pair)).count == 2)
    if settings.segment_max_tokens is None or not pairs_of_texts:
        return MixSides(pair, other, saliency, None if saliency is None else saliency[partner])
    cut, source = cut_segments(pair, settings.segment_max_tokens, settings.pad_token_id, 2)
    if saliency is None:
        return MixSides(cut, other)
    if settings.pair_saliency == "per_segment":   # the reference's saliency of its cut copy
        saliency_a = segment_saliency(model, cut, labels, settings.pad_token_id, num_segments=2)
    else:
        saliency_a = saliency.gather(1, source)
    second = (torch.arange(partner.shape[0], device=partner.device) >= partner.shape[0] // 2).view(-1, 1)
    b = {key: torch.where(second, cut[key][partner], other[key]) for key in pair}
    saliency_b = torch.where(second, saliency[partner].gather(1, source[partner]), saliency[partner])
    return MixSides(cut, b, saliency_a, saliency_b)


def plan_mix(method: Method, model: nn.Module, pair: dict[str, torch.Tensor], partner: torch.Tensor,
             settings: MixupSettings, generator: torch.Generator | None,
             saliency: torch.Tensor | None = None, labels: torch.Tensor | None = None,
             host_generator: torch.Generator | None = None) -> MixPlan:
    """Build the mixed half [mix(A, B); mix(B, A)] of a step for ``method``. ``labels`` (of the
    pair batch) are needed only for the saliency of a cut copy (``segment_max_tokens``);
    ``host_generator``: see ``compute_gradients``."""
    if method.kind == "hidden":
        host = host_generator or generator
        weight = sample_hidden_weight(host, settings.hidden_alpha)
        layer = 0 if method.name == "embedmix" else choose_tmix_layer(model, settings, host)
        lam = torch.full((partner.shape[0],), 1.0 - weight, device=partner.device)
        return MixPlan(inputs=model_inputs(pair), lam=lam, hidden_layer=layer, hidden_weight=weight)
    if method.kind not in ("saliency_span", "input", "unk"):
        raise ValueError(f"method {method.name!r} has no mixed half")
    sides = mix_sides(model, pair, partner, labels, settings, saliency)
    a, b, segments = sides.a, sides.b, settings.num_segments
    if method.kind == "saliency_span":
        result = mixing.ssmix(a, b, sides.saliency_a, sides.saliency_b, settings.mix_ratio,
                              cap_span_by_b=settings.cap_span_by_b, tie=settings.tie, num_segments=segments)
    elif method.name == "ssmix-nosal":
        result = mixing.random_span(a, b, settings.mix_ratio, generator, start=settings.nosal_start,
                                    cap_span_by_b=settings.cap_span_by_b, num_segments=segments)
    elif method.name == "ssmix-nosal-nospan":
        result = mixing.random_tokens(a, b, settings.mix_ratio, generator, num_segments=segments)
    else:
        if settings.unk_token_id is None:
            raise ValueError("method 'unk' needs MixupSettings.unk_token_id (the tokenizer's unk_token_id)")
        result = mixing.unk(a, settings.mix_ratio, settings.unk_token_id, generator, num_segments=segments)
    return MixPlan(inputs=model_inputs(result.batch), lam=result.lam, mix=result, sides=sides)


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


def segment_saliency(model: nn.Module, pair: dict[str, torch.Tensor], labels: torch.Tensor, pad_token_id: int = 0,
                     num_segments: int | None = None) -> torch.Tensor:
    """The reference code's saliency of a pair (``pair_saliency="per_segment"``): each segment
    runs alone through the model as ``[CLS] segment [SEP]``, every token of it with the segment's
    own token type ([CLS] included, as the reference splits pairs), with the example's label;
    its tokens' saliencies are put back at the segment's positions in the pair. (n, T)."""
    ids = pair["input_ids"]
    n, T = ids.shape
    seg = find_segments(content_mask(pair), num_segments)
    types = pair.get("token_type_ids")
    out = torch.zeros(n, T, device=ids.device)
    j = torch.arange(T, device=ids.device).view(1, T)
    for s in range(seg.count):
        start, length = seg.starts[s].view(n, 1), seg.lengths[s].view(n, 1)
        body = (j >= 1) & (j <= length)
        source = (start + j - 1).clamp(0, T - 1)
        sep = ids.gather(1, (start + length).clamp(max=T - 1))                 # the token after the segment
        alone = torch.where(j == 0, ids[:, :1], torch.where(body, ids.gather(1, source),
                            torch.where(j == length + 1, sep, torch.full_like(ids, pad_token_id))))
        attended = j <= length + 1
        inputs = {"input_ids": alone, "attention_mask": attended.long()}
        if types is not None:
            inputs["token_type_ids"] = types.gather(1, start.clamp(max=T - 1)) * attended
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
                      autocast_dtype: torch.dtype | None = None, on_mix: OnMix | None = None,
                      host_generator: torch.Generator | None = None) -> StepResult:
    """Accumulate into ``.grad`` the gradient of the paper's loss for one batch. Nothing is read
    back from the device (no host synchronisation) when ``settings.num_segments`` is given.

    batch: (m, T) tensors with input_ids, attention_mask, special_tokens_mask [, token_type_ids];
    labels: (m,). With an odd m the last example takes part in the clean loss only.
    generator: on the batch's device, for the mixers' draws; host_generator: a CPU generator for
    what the host decides (λ', TMix's layer); None takes ``generator`` (on CPU, the same stream).
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
        return StepResult(loss.detach().double(), loss.detach(), None, None, labels.shape[0])

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
            saliency = (segment_saliency(model, pair, labels[:rows], settings.pad_token_id, settings.num_segments)
                        if per_segment else separate_saliency(model, pair, labels[:rows], pairs))

    with autocast() if per_segment else nullcontext():   # a cut copy's per-segment saliency runs the model
        plan = plan_mix(method, model, pair, partner, settings, generator, saliency, labels[:rows],
                        host_generator)
    if on_mix is not None and plan.mix is not None:
        on_mix(plan, partner, labels[:rows])                     # the mixes this step made, as made
    with autocast():
        mixed_loss = mixup_loss(mixed_logits(model, plan, partner), labels[:rows], labels[:rows][partner], plan.lam)
    if free_saliency:
        (0.5 * mixed_loss).backward()
    else:
        (0.5 * clean_loss + 0.5 * mixed_loss).backward()
    clean, mixed = clean_loss.detach(), mixed_loss.detach()
    return StepResult(0.5 * (clean.double() + mixed.double()), clean, mixed, plan.lam.mean().detach(),
                      labels.shape[0])


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
               labels: torch.Tensor, method: str | Method, settings: MixupSettings | None = None,
               generator: torch.Generator | None = None, scheduler=None, clip_norm: float | None = 1.0,
               autocast_dtype: torch.dtype | None = None, on_mix: OnMix | None = None,
               host_generator: torch.Generator | None = None) -> StepResult:
    """One optimiser step: gradients of the paper's loss, clipping *after* backward (the
    reference code clips before, which never clips the update), then the update."""
    optimizer.zero_grad(set_to_none=True)
    result = compute_gradients(model, batch, labels, method, settings, generator, autocast_dtype, on_mix,
                               host_generator)
    if clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return result
