"""The method table (docs/method.md §2): plain data, no torch, so that sweep files can be validated
and cells planned without importing the training stack. The step that runs a method is
``ssmix.step``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MethodKind = Literal["plain", "saliency_span", "input", "unk", "hidden"]


@dataclass(frozen=True)
class Method:
    name: str
    kind: MethodKind
    description: str
    reads: tuple[str, ...] = ()   # the trial settings (ssmix.config) its phase-2 step reads

    @property
    def uses_mix_ratio(self) -> bool:
        return "mix_ratio" in self.reads


# In the order of the paper's Table 2 (tables and summaries list methods in this order). What a
# method reads decides what its runs carry as params, what a search varies for it, and which
# settings a phase-1 cell (shared by every method) leaves out of its id.
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("none", "plain", "No mixup: cross-entropy on the batch"),
    Method("embedmix", "hidden", "EmbedMix: interpolate the embedding-layer outputs", ("hidden_alpha",)),
    Method("tmix", "hidden", "TMix: interpolate the hidden states after a random layer of {7, 9, 12}",
           ("hidden_alpha", "tmix_layers")),
    Method("ssmix", "saliency_span", "SSMix: least salient span of A <- most salient span of B",
           ("mix_ratio", "saliency", "pair_saliency", "tie", "cap_span_by_b", "segment_max_tokens")),
    Method("ssmix-nosal", "input", "SSMix - saliency: random span of A <- random span of B",
           ("mix_ratio", "nosal_start", "cap_span_by_b", "segment_max_tokens")),
    Method("ssmix-nosal-nospan", "input", "SSMix - saliency - span: random tokens of A <- B's at the same positions",
           ("mix_ratio", "segment_max_tokens")),
    Method("unk", "unk", "Random [UNK] replacement (word dropout), labels kept", ("mix_ratio", "segment_max_tokens")),
)}
# Every setting some method reads.
MIXUP_SETTINGS: tuple[str, ...] = tuple(dict.fromkeys(key for m in METHODS.values() for key in m.reads))
# The phase-2 arm without mixup (a sweep's `phase2_control`): its one name, in labels, run names,
# summaries and the report's rows.
PHASE2_CONTROL = "none (phase 2)"


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}") from None
