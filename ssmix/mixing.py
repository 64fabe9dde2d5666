"""Input-level mixers: SSMix, its two ablations, and random-[UNK] word dropout (docs/method.md §1).

A batch is a dict of (n, T) tensors with ``input_ids``, ``attention_mask`` and
``special_tokens_mask`` (1 on [CLS]/[SEP]/padding), optionally ``token_type_ids``. Every mixer

- is vectorised over examples and segments (no Python loop per example) and runs on the
  batch's device;
- never modifies its inputs: the result's ``batch`` is a new dict whose ``input_ids`` is a new
  tensor and whose other tensors are A's (shared, not copied: special tokens, token types and
  the attention mask stay where A had them);
- mixes each segment of a pair on its own (``p`` with ``p``, ``q`` with ``q``) and returns
  ``lam`` (n,) = replaced tokens / content tokens of A, the share of the label that goes to B;
- draws randomness only from the ``generator`` it is given.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ssmix.segments import (
    Segments,
    content_mask,
    find_segments,
    positions_in_window,
    ranks,
    span_lengths,
    valid_window_starts,
    window_sums,
)

REQUIRED_KEYS = ("input_ids", "attention_mask", "special_tokens_mask")


@dataclass(frozen=True)
class MixResult:
    """What a mixer made.

    batch:    the mixed batch, same keys and shapes as A
    lam:      (n,) float, share of the label that goes to B (0 where nothing was mixed)
    replaced: (n, T) bool, positions of A whose token was replaced
    taken:    (n, T) bool, positions of B whose token was copied into A (all False for ``unk``)
    """

    batch: dict[str, torch.Tensor]
    lam: torch.Tensor
    replaced: torch.Tensor
    taken: torch.Tensor


# ----------------------------------------------------------------------------------- checks


def _check_batch(name: str, batch) -> tuple[int, int]:
    if not isinstance(batch, dict):
        raise ValueError(f"{name} must be a dict of (n, T) tensors, got {type(batch).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in batch]
    if missing:
        raise ValueError(f"{name} is missing key(s) {missing}; a batch needs {list(REQUIRED_KEYS)}")
    shape = batch["input_ids"].shape
    if len(shape) != 2:
        raise ValueError(f"{name}['input_ids'] must be 2-D (n, T), got shape {tuple(shape)}")
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape != shape:
            raise ValueError(f"{name}[{key!r}] has shape {tuple(value.shape)}, expected {tuple(shape)} "
                             f"like {name}['input_ids']")
    return shape[0], shape[1]


def _check_pair(a, b) -> tuple[int, int]:
    shape_a = _check_batch("a", a)
    shape_b = _check_batch("b", b)
    if shape_a != shape_b:
        raise ValueError(f"a and b must have the same (n, T) shape, got {shape_a} and {shape_b}")
    return shape_a


def _check_ratio(mix_ratio) -> float:
    try:
        ratio = float(mix_ratio)
    except (TypeError, ValueError):
        raise ValueError(f"mix_ratio must be a number in (0, 1], got {mix_ratio!r}") from None
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"mix_ratio must be in (0, 1], got {mix_ratio!r}")
    return ratio


def _check_saliency(name: str, saliency, shape: tuple[int, int]) -> None:
    if not isinstance(saliency, torch.Tensor) or tuple(saliency.shape) != tuple(shape):
        got = tuple(saliency.shape) if isinstance(saliency, torch.Tensor) else type(saliency).__name__
        raise ValueError(f"{name} must be a tensor of shape {tuple(shape)} (n, T), got {got}")


def _paired_segments(a, b) -> tuple[Segments, Segments]:
    content_a, content_b = content_mask(a), content_mask(b)
    seg_a = find_segments(content_a)
    seg_b = find_segments(content_b, num_segments=seg_a.count)
    if seg_b.count > seg_a.count:  # B has more segments than A: pad A so shapes agree
        seg_a = find_segments(content_a, num_segments=seg_b.count)
    return seg_a, seg_b


def _uniform(shape, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=like.device)


# ------------------------------------------------------------------------------ span copying


def _copy_spans(a, b, seg_a: Segments, start_a, start_b, span, mixable) -> MixResult:
    """Copy, per segment, b[start_b : start_b + span] over a[start_a : start_a + span].

    start_a, start_b, span: (S, n) long; mixable: (S, n) bool. Segments are disjoint, so the
    per-segment copies are combined with a sum over S.
    """
    S, n = span.shape
    T = a["input_ids"].shape[1]
    span = torch.where(mixable, span, torch.zeros_like(span))
    replaced_s = positions_in_window(start_a.reshape(-1), span.reshape(-1), T).view(S, n, T)
    taken_s = positions_in_window(start_b.reshape(-1), span.reshape(-1), T).view(S, n, T)
    positions = torch.arange(T, device=span.device).view(1, 1, T)
    source_s = positions - start_a.unsqueeze(-1) + start_b.unsqueeze(-1)           # (S, n, T)
    source = (source_s * replaced_s).sum(dim=0).clamp(0, T - 1)                       # (n, T)
    replaced = replaced_s.any(dim=0)
    mixed_ids = torch.where(replaced, b["input_ids"].gather(1, source), a["input_ids"])
    lam = span.sum(dim=0).double() / seg_a.lengths.sum(dim=0).clamp(min=1).double()
    batch = dict(a)
    batch["input_ids"] = mixed_ids
    return MixResult(batch=batch, lam=lam.float(), replaced=replaced, taken=taken_s.any(dim=0))


def _mixable(seg_a: Segments, seg_b: Segments, span: torch.Tensor, cap_span_by_b: bool) -> torch.Tensor:
    """(S, n) bool: segments that are mixed. With the cap, B must hold a whole window; without
    it (the reference code), any B segment with content lends one."""
    if cap_span_by_b:
        return (seg_a.lengths > 0) & (seg_b.lengths >= span)
    return (seg_a.lengths > 0) & (seg_b.lengths > 0)


def _masked_argext(scores: torch.Tensor, valid: torch.Tensor, largest: bool, tie: str = "first") -> torch.Tensor:
    """Index of the largest (smallest) valid score; among equal scores the first, or with
    ``tie="last"`` the last (the reference code's window search keeps the later window)."""
    fill = float("-inf") if largest else float("inf")
    scores = torch.where(valid, scores, torch.full_like(scores, fill))
    if tie == "last":
        flipped = scores.flip(-1)
        return scores.shape[-1] - 1 - (flipped.argmax(dim=-1) if largest else flipped.argmin(dim=-1))
    return scores.argmax(dim=-1) if largest else scores.argmin(dim=-1)


# ---------------------------------------------------------------------------------- mixers


def ssmix(a: dict, b: dict, saliency_a: torch.Tensor, saliency_b: torch.Tensor,
          mix_ratio: float, cap_span_by_b: bool = True, tie: str = "first") -> MixResult:
    """SSMix: the least salient window of each segment of A is replaced by the most salient
    window of the same length in the same segment of B.

    saliency_a, saliency_b: (n, T) float, per-token saliency (any scale: only the order of
    window means matters). Windows lie wholly inside content tokens, except with
    ``cap_span_by_b=False`` (the reference code), where a B shorter than the span lends a window
    that runs over its [SEP] and padding. ``tie``: which of equal windows wins (first or last).
    """
    ratio = _check_ratio(mix_ratio)
    n, T = _check_pair(a, b)
    _check_saliency("saliency_a", saliency_a, (n, T))
    _check_saliency("saliency_b", saliency_b, (n, T))
    seg_a, seg_b = _paired_segments(a, b)
    S = seg_a.count
    span = span_lengths(seg_a.lengths, seg_b.lengths, ratio, cap_span_by_b)         # (S, n)
    mixable = _mixable(seg_a, seg_b, span, cap_span_by_b)

    flat_span = span.reshape(-1)
    sal_a = (saliency_a.detach().float().unsqueeze(0) * seg_a.masks).reshape(S * n, T)
    sal_b = (saliency_b.detach().float().unsqueeze(0) * seg_b.masks).reshape(S * n, T)
    # Equal-length windows: comparing sums is comparing means.
    valid_a = valid_window_starts(seg_a.starts.reshape(-1), seg_a.lengths.reshape(-1), flat_span, T)
    valid_b = valid_window_starts(seg_b.starts.reshape(-1), seg_b.lengths.reshape(-1), flat_span, T,
                                  overrun=not cap_span_by_b)
    least_salient_a = _masked_argext(window_sums(sal_a, flat_span), valid_a, largest=False, tie=tie)
    most_salient_b = _masked_argext(window_sums(sal_b, flat_span), valid_b, largest=True, tie=tie)
    return _copy_spans(a, b, seg_a, least_salient_a.view(S, n), most_salient_b.view(S, n), span, mixable)


def random_span(a: dict, b: dict, mix_ratio: float, generator: torch.Generator | None = None,
                start: str = "independent", cap_span_by_b: bool = True) -> MixResult:
    """Ablation "SSMix - saliency": a random window of A replaced by a random window of B of
    the same length, per segment. ``start="shared"`` (the reference code) draws one offset for
    both: B's window starts where A's does (as far as B's length allows)."""
    ratio = _check_ratio(mix_ratio)
    _check_pair(a, b)
    seg_a, seg_b = _paired_segments(a, b)
    span = span_lengths(seg_a.lengths, seg_b.lengths, ratio, cap_span_by_b)
    mixable = _mixable(seg_a, seg_b, span, cap_span_by_b)
    u = _uniform((2,) + tuple(span.shape), a["input_ids"], generator)
    choices_a = (seg_a.lengths - span + 1).clamp(min=1)
    choices_b = (seg_b.lengths - span + 1).clamp(min=1)
    offset_a = torch.minimum((u[0] * choices_a).long(), choices_a - 1)
    offset_b = (torch.minimum(offset_a, choices_b - 1) if start == "shared"
                else torch.minimum((u[1] * choices_b).long(), choices_b - 1))
    return _copy_spans(a, b, seg_a, seg_a.starts + offset_a, seg_b.starts + offset_b, span, mixable)


def random_tokens(a: dict, b: dict, mix_ratio: float,
                  generator: torch.Generator | None = None) -> MixResult:
    """Ablation "SSMix - saliency - span": ``l`` random positions of each segment of A, each
    replaced by B's token at the same position of the same segment (positions valid in both)."""
    ratio = _check_ratio(mix_ratio)
    n, T = _check_pair(a, b)
    seg_a, seg_b = _paired_segments(a, b)
    S = seg_a.count
    span = span_lengths(seg_a.lengths, seg_b.lengths, ratio)
    mixable = (seg_a.lengths > 0) & (seg_b.lengths >= span)
    positions = torch.arange(T, device=span.device).view(1, 1, T)
    offset = positions - seg_a.starts.unsqueeze(-1)                                 # (S, n, T)
    candidates = seg_a.masks & (offset < seg_b.lengths.unsqueeze(-1))
    scores = torch.where(candidates, _uniform((S, n, T), a["input_ids"], generator),
                         torch.full((S, n, T), 2.0, device=span.device))
    chosen_s = candidates & (ranks(scores) < span.unsqueeze(-1)) & mixable.unsqueeze(-1)
    source = ((seg_b.starts.unsqueeze(-1) + offset) * chosen_s).sum(dim=0).clamp(0, T - 1)
    replaced = chosen_s.any(dim=0)
    taken = torch.zeros_like(replaced)
    taken.scatter_(1, source, replaced)
    mixed_ids = torch.where(replaced, b["input_ids"].gather(1, source), a["input_ids"])
    count = chosen_s.sum(dim=(0, 2)).double()
    lam = (count / seg_a.lengths.sum(dim=0).clamp(min=1).double()).float()
    batch = dict(a)
    batch["input_ids"] = mixed_ids
    return MixResult(batch=batch, lam=lam, replaced=replaced, taken=taken)


def unk(a: dict, mix_ratio: float, unk_token_id: int,
        generator: torch.Generator | None = None) -> MixResult:
    """Random-[UNK] word dropout (Appendix B.2): ``max(floor(mix_ratio * |seg|), 1)`` random
    content tokens of each segment become ``unk_token_id``. The label is kept: ``lam`` is 0."""
    ratio = _check_ratio(mix_ratio)
    n, T = _check_batch("a", a)
    if not isinstance(unk_token_id, int) or isinstance(unk_token_id, bool) or unk_token_id < 0:
        raise ValueError(f"unk_token_id must be a non-negative int, got {unk_token_id!r}")
    seg = find_segments(content_mask(a))
    S = seg.count
    count = torch.clamp(torch.floor(seg.lengths.double() * ratio).long(), min=1)     # (S, n)
    scores = torch.where(seg.masks, _uniform((S, n, T), a["input_ids"], generator),
                         torch.full((S, n, T), 2.0, device=count.device))
    replaced = (seg.masks & (ranks(scores) < count.unsqueeze(-1))).any(dim=0)
    batch = dict(a)
    batch["input_ids"] = torch.where(replaced, torch.full_like(a["input_ids"], unk_token_id), a["input_ids"])
    return MixResult(batch=batch, lam=torch.zeros(n, device=count.device), replaced=replaced,
                     taken=torch.zeros_like(replaced))
