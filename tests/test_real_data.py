"""End-to-end on real data (../shared/data) with the real pretrained MiniLM encoder.

These run in CI, where ../shared sits beside the clone; elsewhere they skip with the reason."""

import os
from pathlib import Path

import pytest

from ssmix.config import PhaseConfig, TrialConfig
from ssmix.finetune import finetune

SHARED_DATA = Path(os.environ.get("SSMIX_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
pytestmark = [
    pytest.mark.data,
    pytest.mark.slow,
    pytest.mark.skipif(not (SHARED_DATA / "trec" / "train.jsonl").exists(),
                       reason=f"real data not found at {SHARED_DATA} (set SSMIX_SHARED_DATA)"),
]


def test_trec_coarse_minilm_far_above_chance(tmp_path):
    config = TrialConfig(task="trec-coarse", model="minilm", method="ssmix", data_dir=str(SHARED_DATA),
                         max_train_examples=1280, eval_every=1000,
                         phase1=PhaseConfig(epochs=1, lr=2e-4), phase2=PhaseConfig(epochs=1, lr=1e-5, max_steps=4))
    result = finetune(config, tmp_path)
    majority = 138 / 500                      # the most frequent class of the 500 test questions
    assert result.phase1.best_accuracy["test"] > 0.75 > 2 * majority
    assert result.phase2.steps == 4 and result.phase2.best_accuracy["test"] > 0.7


def test_ssmix_phase2_on_a_pair_task(tmp_path, monkeypatch):
    from ssmix import mixing
    from ssmix.segments import content_mask, find_segments

    seen = []
    original = mixing.ssmix
    monkeypatch.setattr(mixing, "ssmix", lambda *a, **k: seen.append(original(*a, **k)) or seen[-1])
    config = TrialConfig(task="rte", model="minilm", method="ssmix", data_dir=str(SHARED_DATA), batch_size=16,
                         max_train_examples=64, max_eval_examples=64,
                         phase1=PhaseConfig(epochs=1, lr=5e-5, max_steps=2),
                         phase2=PhaseConfig(epochs=1, lr=1e-5, max_steps=3))
    result = finetune(config, tmp_path)
    assert result.phase2.steps == 3 and len(seen) == 3
    segments = find_segments(content_mask(seen[0].batch))
    assert segments.count == 2
    replaced_per_segment = (segments.masks & seen[0].replaced.unsqueeze(0)).sum(dim=2)
    assert (replaced_per_segment >= 1).all()                 # both sentences of every pair were mixed
