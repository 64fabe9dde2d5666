"""Pure tensor helpers: where the content segments of a padded batch are, and window sums.

A *segment* is a maximal run of content tokens (not special, not padding). A single sentence
``[CLS] p [SEP] [PAD]`` has one segment; a pair ``[CLS] p [SEP] q [SEP]`` (or RoBERTa's
``<s> p </s></s> q </s>``) has two. Nothing here needs to know which tokenizer made the batch.

Every function is vectorised over the batch and over segments: tensors of shape ``(S, n)`` hold
one value per (segment index, example).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Segments:
    """Segment layout of a batch.

    masks:   (S, n, T) bool, ``masks[s, i, t]`` is True where token t of example i is in segment s
    starts:  (S, n) long, first position of each segment (0 where the segment is absent)
    lengths: (S, n) long, number of content tokens in each segment (0 where absent)
    """

    masks: torch.Tensor
    starts: torch.Tensor
    lengths: torch.Tensor

    @property
    def count(self) -> int:
        return self.masks.shape[0]


def content_mask(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(n, T) bool: tokens that are text, i.e. neither special tokens nor padding."""
    return (batch["special_tokens_mask"] == 0) & (batch["attention_mask"] != 0)


def find_segments(content: torch.Tensor, num_segments: int | None = None) -> Segments:
    """Locate the runs of True in each row of ``content`` (n, T).

    ``num_segments``: how many segments the inputs have (1 for single texts, 2 for pairs), so
    that no value is read back from the device; runs past it are left out. None counts them
    (a host synchronisation on a GPU).
    """
    n, T = content.shape
    previous = torch.zeros_like(content)
    previous[:, 1:] = content[:, :-1]
    run_starts = content & ~previous                                   # (n, T)
    segment_id = torch.cumsum(run_starts.long(), dim=1) - 1           # (n, T), -1 before the first
    segment_id = torch.where(content, segment_id, torch.full_like(segment_id, -1))
    if num_segments is None:
        num_segments = int(run_starts.sum(dim=1).max().item()) if n > 0 else 0
    S = max(num_segments, 1)
    ids = torch.arange(S, device=content.device)
    masks = segment_id.unsqueeze(0) == ids.view(S, 1, 1)              # (S, n, T)
    lengths = masks.sum(dim=2)                                         # (S, n)
    starts = masks.long().argmax(dim=2)                                # first True; 0 if none
    return Segments(masks=masks, starts=starts, lengths=lengths)


def cut_segments(batch: dict[str, torch.Tensor], max_tokens: int, pad_token_id: int,
                 num_segments: int | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The reference code's cut of the copy it mixes (``segment_max_tokens``): each segment keeps
    its first ``max_tokens - 2`` content tokens (``max_tokens`` counts the [CLS] and [SEP] around
    it, as the reference cuts ``[CLS] text [SEP]`` to 64), special tokens stay, what is left moves
    to the front and the freed tail becomes padding. Returns the cut batch (same keys and shape)
    and ``source`` (n, T): the position of the input each position of the cut batch holds."""
    content = content_mask(batch)
    seg = find_segments(content, num_segments)
    n, T = content.shape
    positions = torch.arange(T, device=content.device).view(1, T)
    segment_start = (seg.starts.unsqueeze(-1) * seg.masks).sum(dim=0)              # (n, T) on content
    keep = (batch["attention_mask"] != 0) & (~content | (positions - segment_start < max_tokens - 2))
    source = torch.where(keep, positions, positions + T).argsort(dim=1)       # kept ones first, in order
    tail = positions >= keep.sum(dim=1, keepdim=True)
    padding = {"input_ids": pad_token_id, "attention_mask": 0, "special_tokens_mask": 1}
    cut = {}
    for key, value in batch.items():
        moved = value.gather(1, source)
        cut[key] = torch.where(tail, torch.full_like(moved, padding.get(key, 0)), moved)
    return cut, source


def max_span_length(T: int, mix_ratio: float) -> int:
    """An upper bound of ``span_lengths`` for inputs of T tokens, known without reading the batch."""
    return max(int(T * mix_ratio), 1)


def span_lengths(length_a: torch.Tensor, length_b: torch.Tensor, mix_ratio: float,
                 cap_by_b: bool = True) -> torch.Tensor:
    """docs/method.md §1: ``l = max(min(floor(mix_ratio * |a|), |b|), 1)`` elementwise (float64 floor, as
    Python's ``int(len * ratio)`` in the reference code). ``cap_by_b=False`` is the reference
    code's ``max(floor(mix_ratio * |a|), 1)``, whatever B's length."""
    wanted = torch.floor(length_a.double() * mix_ratio).long()
    return torch.clamp(torch.minimum(wanted, length_b) if cap_by_b else wanted, min=1)


def window_means(values: torch.Tensor, span_length: torch.Tensor, max_span: int) -> torch.Tensor:
    """Mean of ``values`` over the window ``[p, p + span_length)`` for every start p, summed
    left to right in the values' dtype and divided by the length, as ``avg_pool1d`` computes the
    reference code's window scores (so equal inputs rank windows alike, bit for bit).

    values: (R, T) float; span_length: (R,) long, at least 1 and at most ``max_span`` (a Python
    int, so that nothing is read back from the device). Windows running past the end are
    clipped (callers mask them out as invalid anyway).
    """
    R, T = values.shape
    padded = torch.nn.functional.pad(values, (0, max_span))
    span = span_length.view(R, 1)
    total = torch.zeros_like(values)
    for j in range(max_span):
        total = total + torch.where(span > j, padded[:, j:j + T], torch.zeros((), dtype=values.dtype,
                                                                                 device=values.device))
    return total / span.clamp(min=1).to(values.dtype)


def valid_window_starts(starts: torch.Tensor, lengths: torch.Tensor, span_length: torch.Tensor,
                        T: int) -> torch.Tensor:
    """(R, T) bool: window starts p such that ``[p, p + span_length)`` lies wholly inside the
    segment ``[start, start + length)``. starts, lengths, span_length: (R,)."""
    positions = torch.arange(T, device=starts.device).view(1, T)
    first = starts.view(-1, 1)
    last = (starts + lengths - span_length).view(-1, 1)
    return (positions >= first) & (positions <= last)


def positions_in_window(window_start: torch.Tensor, span_length: torch.Tensor, T: int) -> torch.Tensor:
    """(R, T) bool: positions covered by ``[window_start, window_start + span_length)``."""
    positions = torch.arange(T, device=window_start.device).view(1, T)
    return (positions >= window_start.view(-1, 1)) & (positions < (window_start + span_length).view(-1, 1))


def ranks(scores: torch.Tensor) -> torch.Tensor:
    """Rank (0 = smallest) of each entry along the last dimension."""
    return torch.argsort(torch.argsort(scores, dim=-1), dim=-1)
