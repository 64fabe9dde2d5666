"""The method table (SPEC section 2): plain data, no torch, so that sweep files can be validated
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


# In the order of the paper's Table 2 (tables and summaries list methods in this order).
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("none", "plain", "No mixup: cross-entropy on the batch"),
    Method("embedmix", "hidden", "EmbedMix: interpolate the embedding-layer outputs"),
    Method("tmix", "hidden", "TMix: interpolate the hidden states after a random layer of {7, 9, 12}"),
    Method("ssmix", "saliency_span", "SSMix: least salient span of A <- most salient span of B"),
    Method("ssmix-nosal", "input", "SSMix - saliency: random span of A <- random span of B"),
    Method("ssmix-nosal-nospan", "input", "SSMix - saliency - span: random tokens of A <- B's at the same positions"),
    Method("unk", "unk", "Random [UNK] replacement (word dropout), labels kept"),
)}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}") from None
