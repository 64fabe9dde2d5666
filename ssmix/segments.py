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

    ``num_segments`` pads the result to at least that many segments so two batches can be
    paired segment by segment; absent segments have length 0.
    """
    n, T = content.shape
    previous = torch.zeros_like(content)
    previous[:, 1:] = content[:, :-1]
    run_starts = content & ~previous                                   # (n, T)
    segment_id = torch.cumsum(run_starts.long(), dim=1) - 1           # (n, T), -1 before the first
    segment_id = torch.where(content, segment_id, torch.full_like(segment_id, -1))
    found = int(run_starts.sum(dim=1).max().item()) if n > 0 else 0
    S = max(found, num_segments or 0, 1)
    ids = torch.arange(S, device=content.device)
    masks = segment_id.unsqueeze(0) == ids.view(S, 1, 1)              # (S, n, T)
    lengths = masks.sum(dim=2)                                         # (S, n)
    starts = masks.long().argmax(dim=2)                                # first True; 0 if none
    return Segments(masks=masks, starts=starts, lengths=lengths)


def span_lengths(length_a: torch.Tensor, length_b: torch.Tensor, mix_ratio: float,
                 cap_by_b: bool = True) -> torch.Tensor:
    """docs/method.md §1: ``l = max(min(floor(mix_ratio * |a|), |b|), 1)`` elementwise (float64 floor, as
    Python's ``int(len * ratio)`` in the reference code). ``cap_by_b=False`` is the reference
    code's ``max(floor(mix_ratio * |a|), 1)``: B's window may then run over its [SEP] and padding."""
    wanted = torch.floor(length_a.double() * mix_ratio).long()
    return torch.clamp(torch.minimum(wanted, length_b) if cap_by_b else wanted, min=1)


def window_sums(values: torch.Tensor, span_length: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` over the window ``[p, p + span_length)`` for every start p.

    values: (R, T) float; span_length: (R,) long. Returns (R, T); windows running past the end
    are clipped (callers mask them out as invalid anyway).
    """
    R, T = values.shape
    cumulative = torch.zeros(R, T + 1, dtype=values.dtype, device=values.device)
    cumulative[:, 1:] = torch.cumsum(values, dim=1)
    starts = torch.arange(T, device=values.device).expand(R, T)
    ends = torch.clamp(starts + span_length.view(R, 1), max=T)
    return cumulative.gather(1, ends) - cumulative[:, :T]


def valid_window_starts(starts: torch.Tensor, lengths: torch.Tensor, span_length: torch.Tensor,
                        T: int, overrun: bool = False) -> torch.Tensor:
    """(R, T) bool: window starts p such that ``[p, p + span_length)`` lies wholly inside the
    segment ``[start, start + length)``. starts, lengths, span_length: (R,). ``overrun``: a
    segment shorter than the window still offers its first position (the window runs past it,
    as in the reference code without the cap by B's length)."""
    positions = torch.arange(T, device=starts.device).view(1, T)
    first = starts.view(-1, 1)
    last = (starts + lengths - span_length).view(-1, 1)
    if overrun:
        last = torch.maximum(last, first)
    return (positions >= first) & (positions <= last)


def positions_in_window(window_start: torch.Tensor, span_length: torch.Tensor, T: int) -> torch.Tensor:
    """(R, T) bool: positions covered by ``[window_start, window_start + span_length)``."""
    positions = torch.arange(T, device=window_start.device).view(1, T)
    return (positions >= window_start.view(-1, 1)) & (positions < (window_start + span_length).view(-1, 1))


def ranks(scores: torch.Tensor) -> torch.Tensor:
    """Rank (0 = smallest) of each entry along the last dimension."""
    return torch.argsort(torch.argsort(scores, dim=-1), dim=-1)
