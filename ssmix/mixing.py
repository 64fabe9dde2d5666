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
    max_span_length,
    positions_in_window,
    ranks,
    span_lengths,
    valid_window_starts,
    window_means,
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


def check_ratio(mix_ratio) -> float:
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


def _paired_segments(a, b, num_segments: int | None) -> tuple[Segments, Segments]:
    content_a, content_b = content_mask(a), content_mask(b)
    if num_segments is None:   # count them (a host synchronisation): as many as the longer side has
        count = lambda content: int(find_segments(content).count)   # noqa: E731
        num_segments = max(count(content_a), count(content_b))
    return find_segments(content_a, num_segments), find_segments(content_b, num_segments)


def _uniform(shape, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=like.device)


# ------------------------------------------------------------------------------ span copying


def _copy_spans(a, b, seg_a: Segments, seg_b: Segments, start_a, start_b, span, mixable) -> MixResult:
    """Copy, per segment, b[start_b : start_b + span] over a[start_a : start_a + span].

    start_a, start_b, span: (S, n) long; mixable: (S, n) bool. Only A's own segment is written:
    a window that starts on the token before it (the reference code's ``nosal_start: shared``)
    leaves that token as it is, though λ counts the whole window, as the reference's does. A
    window that starts on the token before B's segment takes B's [CLS] there (the reference code
    mixes ``[CLS] segment [SEP]`` pieces). Segments are disjoint, so the per-segment copies are
    combined with a sum over S.
    """
    S, n = span.shape
    T = a["input_ids"].shape[1]
    span = torch.where(mixable, span, torch.zeros_like(span))
    skipped = (seg_a.starts - start_a).clamp(min=0)                                     # (S, n): 0 or 1
    replaced_s = positions_in_window(start_a.reshape(-1), span.reshape(-1), T).view(S, n, T) & seg_a.masks
    taken_s = positions_in_window((start_b + skipped).reshape(-1), (span - skipped).clamp(min=0).reshape(-1),
                                  T).view(S, n, T)
    positions = torch.arange(T, device=span.device).view(1, 1, T)
    source_s = positions - start_a.unsqueeze(-1) + start_b.unsqueeze(-1)           # (S, n, T)
    before_b = replaced_s & (source_s == (seg_b.starts - 1).unsqueeze(-1))
    source = (source_s * replaced_s).sum(dim=0).clamp(0, T - 1)                       # (n, T)
    replaced = replaced_s.any(dim=0)
    copied = torch.where(before_b.any(dim=0), b["input_ids"][:, :1], b["input_ids"].gather(1, source))
    mixed_ids = torch.where(replaced, copied, a["input_ids"])
    lam = span.sum(dim=0).double() / seg_a.lengths.sum(dim=0).clamp(min=1).double()
    batch = dict(a)
    batch["input_ids"] = mixed_ids
    return MixResult(batch=batch, lam=lam.float(), replaced=replaced, taken=taken_s.any(dim=0))


def _masked_argext(scores: torch.Tensor, valid: torch.Tensor, largest: bool, tie: str = "first") -> torch.Tensor:
    """Index of the largest (smallest) valid score; among equal scores the first (as torch's
    argmax and argmin, and so the reference code), or with ``tie="last"`` the last."""
    fill = float("-inf") if largest else float("inf")
    scores = torch.where(valid, scores, torch.full_like(scores, fill))
    if tie == "last":
        flipped = scores.flip(-1)
        return scores.shape[-1] - 1 - (flipped.argmax(dim=-1) if largest else flipped.argmin(dim=-1))
    return scores.argmax(dim=-1) if largest else scores.argmin(dim=-1)


def _b_windows(seg_b: Segments, span: torch.Tensor, T: int, cap_span_by_b: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """B's valid window starts (S·n, T) and whether B lends a window at all (S, n).

    Windows lie inside B's text. Without the cap (the reference code), a B whose text is one or
    two tokens shorter than the span lends the window that starts on its [CLS] (and then also
    takes its [SEP]): the reference scores the windows of ``[CLS] text [SEP]`` with the first and
    the last forbidden, and when no other is left the first wins; a shorter B lends nothing."""
    flat_span = span.reshape(-1)
    inside = valid_window_starts(seg_b.starts.reshape(-1), seg_b.lengths.reshape(-1), flat_span, T)
    if cap_span_by_b:
        return inside, seg_b.lengths >= span
    short = (seg_b.lengths < span) & (seg_b.lengths >= span - 2) & (seg_b.lengths > 0)          # (S, n)
    positions = torch.arange(T, device=span.device).view(1, T)
    on_cls = short.reshape(-1, 1) & (positions == (seg_b.starts - 1).reshape(-1, 1))
    return inside | on_cls, (seg_b.lengths >= span) | short


# ---------------------------------------------------------------------------------- mixers


def ssmix(a: dict, b: dict, saliency_a: torch.Tensor, saliency_b: torch.Tensor,
          mix_ratio: float, cap_span_by_b: bool = True, tie: str = "first",
          num_segments: int | None = None) -> MixResult:
    """SSMix: the least salient window of each segment of A is replaced by the most salient
    window of the same length in the same segment of B.

    saliency_a, saliency_b: (n, T) float, per-token saliency (any scale: only the order of
    window means matters). Windows lie wholly inside content tokens; with ``cap_span_by_b=False``
    (the reference code) the span is not capped at B's length, and a B one or two tokens short
    of it lends the window from its [CLS] (see ``_b_windows``). ``tie``: which of equal windows
    wins (first or last). ``num_segments``: 1 or 2, if known (see ``find_segments``).
    """
    ratio = check_ratio(mix_ratio)
    n, T = _check_pair(a, b)
    _check_saliency("saliency_a", saliency_a, (n, T))
    _check_saliency("saliency_b", saliency_b, (n, T))
    seg_a, seg_b = _paired_segments(a, b, num_segments)
    S = seg_a.count
    span = span_lengths(seg_a.lengths, seg_b.lengths, ratio, cap_span_by_b)         # (S, n)
    valid_b, lends = _b_windows(seg_b, span, T, cap_span_by_b)
    mixable = (seg_a.lengths > 0) & lends

    flat_span, longest = span.reshape(-1), max_span_length(T, ratio)
    sal_a = (saliency_a.detach().float().unsqueeze(0) * seg_a.masks).reshape(S * n, T)
    sal_b = (saliency_b.detach().float().unsqueeze(0) * seg_b.masks).reshape(S * n, T)
    valid_a = valid_window_starts(seg_a.starts.reshape(-1), seg_a.lengths.reshape(-1), flat_span, T)
    least_salient_a = _masked_argext(window_means(sal_a, flat_span, longest), valid_a, largest=False, tie=tie)
    most_salient_b = _masked_argext(window_means(sal_b, flat_span, longest), valid_b, largest=True, tie=tie)
    return _copy_spans(a, b, seg_a, seg_b, least_salient_a.view(S, n), most_salient_b.view(S, n), span, mixable)


def random_span(a: dict, b: dict, mix_ratio: float, generator: torch.Generator | None = None,
                start: str = "independent", cap_span_by_b: bool = True,
                num_segments: int | None = None) -> MixResult:
    """Ablation "SSMix - saliency": a random window of A replaced by a random window of B of
    the same length, per segment. ``start="shared"`` is the reference code's rule: one start,
    drawn over A's text and the token before it, for both; B's tokens at the same offsets, its
    [SEP] included; the segment left unmixed where B's window would run past its [SEP]."""
    ratio = check_ratio(mix_ratio)
    _check_pair(a, b)
    seg_a, seg_b = _paired_segments(a, b, num_segments)
    span = span_lengths(seg_a.lengths, seg_b.lengths, ratio, cap_span_by_b)
    u = _uniform((2,) + tuple(span.shape), a["input_ids"], generator)
    if start == "shared":
        choices = (seg_a.lengths - span + 2).clamp(min=1)
        offset = torch.minimum((u[0] * choices).long(), choices - 1) - 1      # -1: the token before A's text
        mixable = (seg_a.lengths > 0) & (seg_b.lengths + 2 > span) & (offset + span <= seg_b.lengths + 1)
        return _copy_spans(a, b, seg_a, seg_b, seg_a.starts + offset, seg_b.starts + offset, span, mixable)
    if cap_span_by_b:
        mixable = (seg_a.lengths > 0) & (seg_b.lengths >= span)
    else:   # our own combination: any B with text lends a window (running past it if B is short)
        mixable = (seg_a.lengths > 0) & (seg_b.lengths > 0)
    choices_a = (seg_a.lengths - span + 1).clamp(min=1)
    choices_b = (seg_b.lengths - span + 1).clamp(min=1)
    offset_a = torch.minimum((u[0] * choices_a).long(), choices_a - 1)
    offset_b = torch.minimum((u[1] * choices_b).long(), choices_b - 1)
    return _copy_spans(a, b, seg_a, seg_b, seg_a.starts + offset_a, seg_b.starts + offset_b, span, mixable)


def random_tokens(a: dict, b: dict, mix_ratio: float, generator: torch.Generator | None = None,
                  num_segments: int | None = None) -> MixResult:
    """Ablation "SSMix - saliency - span": ``l`` random positions of each segment of A, each
    replaced by B's token at the same position of the same segment (positions valid in both)."""
    ratio = check_ratio(mix_ratio)
    n, T = _check_pair(a, b)
    seg_a, seg_b = _paired_segments(a, b, num_segments)
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


def unk(a: dict, mix_ratio: float, unk_token_id: int, generator: torch.Generator | None = None,
        num_segments: int | None = None) -> MixResult:
    """Random-[UNK] word dropout (Appendix B.2): ``max(floor(mix_ratio * |seg|), 1)`` random
    content tokens of each segment become ``unk_token_id``. The label is kept: ``lam`` is 0."""
    ratio = check_ratio(mix_ratio)
    n, T = _check_batch("a", a)
    if not isinstance(unk_token_id, int) or isinstance(unk_token_id, bool) or unk_token_id < 0:
        raise ValueError(f"unk_token_id must be a non-negative int, got {unk_token_id!r}")
    seg = find_segments(content_mask(a), num_segments)
    S = seg.count
    count = torch.clamp(torch.floor(seg.lengths.double() * ratio).long(), min=1)     # (S, n)
    scores = torch.where(seg.masks, _uniform((S, n, T), a["input_ids"], generator),
                         torch.full((S, n, T), 2.0, device=count.device))
    replaced = (seg.masks & (ranks(scores) < count.unsqueeze(-1))).any(dim=0)
    batch = dict(a)
    batch["input_ids"] = torch.where(replaced, torch.full_like(a["input_ids"], unk_token_id), a["input_ids"])
    return MixResult(batch=batch, lam=torch.zeros(n, device=count.device), replaced=replaced,
                     taken=torch.zeros_like(replaced))
