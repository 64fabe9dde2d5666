import json

import pytest

from ssmix.config import PhaseConfig
from ssmix.finetune import finetune
from ssmix.methods import METHODS
from tests.helpers import short_config


@pytest.mark.parametrize("method", list(METHODS))
def test_two_phase_run_for_each_method(model_dir, data_dir, tmp_path, method, monkeypatch):
    from ssmix import step

    planned = []                       # the mixed halves phase 2's steps built (none for "none")
    original = step.plan_mix
    monkeypatch.setattr(step, "plan_mix", lambda *a, **k: planned.append(original(*a, **k)) or planned[-1])
    reports = []
    result = finetune(short_config(model_dir, data_dir, method=method), tmp_path, callback=reports.append)
    if method == "none":
        assert planned == []
    else:                              # every phase-2 step of the method mixed, and only phase 2's
        assert len(planned) == result.phase2.steps
        if method in ("embedmix", "tmix"):
            assert all(p.hidden_weight is not None and p.hidden_layer is not None for p in planned)
        else:
            assert all(p.mix is not None and bool(p.mix.replaced.any()) for p in planned)
            assert all(float(p.lam.max()) > 0 for p in planned) == (method != "unk")   # unk keeps y_A
    assert result.phase1.method == "none" and result.phase2.method == method
    assert result.phase1.steps == 3 and result.phase2.steps == 6          # 24 examples / batch 8
    assert [r.phase for r in reports] == ["phase1"] * 2 + ["phase2"] * 3   # every 2 steps + the last
    assert reports[-1].global_step == 9
    assert set(reports[0].accuracy) == {"test"}
    assert result.best_selection == max(result.phase1.best_selection, result.phase2.best_selection)
    assert (tmp_path / "phase1" / "best" / "config.json").exists()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["best_selection"] == result.best_selection


class Crash(Exception):
    pass


def test_resume_mid_phase2_gives_identical_result(model_dir, data_dir, tmp_path):
    config = short_config(model_dir, data_dir, method="ssmix", phase2=PhaseConfig(epochs=3, lr=1e-4))
    whole = finetune(config, tmp_path / "whole")

    def crash_in_phase2(report):
        if report.phase == "phase2" and report.phase_step == 4:
            raise Crash()

    with pytest.raises(Crash):
        finetune(config, tmp_path / "resumed", callback=crash_in_phase2)
    assert (tmp_path / "resumed" / "phase2" / "state.pt").exists()
    resumed = finetune(config, tmp_path / "resumed")

    def timeless(history):  # examples/s is wall-clock; everything else must match bit for bit
        return [{k: v for k, v in h.items() if k != "examples_per_sec"} for h in history]

    assert timeless(resumed.phase2.history) == timeless(whole.phase2.history)
    assert resumed.phase2.best_accuracy == whole.phase2.best_accuracy
    assert resumed.best_selection == whole.best_selection
    assert resumed.phase2.resumed_at == [4] and whole.phase2.resumed_at == []


def test_phase2_from_given_checkpoint(model_dir, data_dir, tmp_path):
    base = finetune(short_config(model_dir, data_dir), tmp_path / "p1", phases=("phase1",))
    assert base.phase2 is None
    result = finetune(short_config(model_dir, data_dir, method="embedmix"), tmp_path / "p2", phases=("phase2",),
                      phase1_checkpoint=tmp_path / "p1" / "phase1" / "best", phase1_result=base.phase1)
    assert result.phase2.method == "embedmix"
    assert not (tmp_path / "p2" / "phase1").exists()
    assert result.best_selection == max(base.phase1.best_selection, result.phase2.best_selection)


def test_pair_task_feeds_pairs_to_the_mixers(model_dir, data_dir, tmp_path, monkeypatch):
    from ssmix import mixing

    seen = []
    original = mixing.ssmix

    def spy(a, b, sa, sb, ratio, **rules):
        out = original(a, b, sa, sb, ratio, **rules)
        seen.append(out)
        return out

    monkeypatch.setattr(mixing, "ssmix", spy)
    finetune(short_config(model_dir, data_dir, task="rte"), tmp_path)
    assert seen
    from ssmix.segments import content_mask, find_segments

    segments = find_segments(content_mask(seen[0].batch))
    assert segments.count == 2 and (segments.lengths > 0).all()
    # every example had tokens replaced in both segments
    replaced_per_segment = (segments.masks & seen[0].replaced.unsqueeze(0)).sum(dim=2)
    assert (replaced_per_segment >= 1).all()


def test_dev_split_selection_selects_on_held_out_train_and_reports_test(model_dir, data_dir, tmp_path):
    config = short_config(model_dir, data_dir, method="embedmix", selection="dev-split", dev_fraction=0.25)
    result = finetune(config, tmp_path)
    for phase in (result.phase1, result.phase2):
        assert set(phase.best_accuracy) == {"dev", "test"}
        for evaluation in phase.history:                   # selection is the dev accuracy alone
            assert evaluation["selection"] == evaluation["accuracy"]["dev"]


def test_rounds_are_each_reported_at_their_own_best_checkpoint(model_dir, data_dir, tmp_path):
    """ANLI's protocol (TaskSpec.selected_by): each round's dev and test are read at the checkpoint
    where that round's dev was best; the mean of the dev rounds selects phase 2's start."""
    from ssmix.tasks import TaskSpec
    from tests.helpers import write_jsonl

    rows = [json.loads(line) for line in (data_dir / "rte" / "train.jsonl").read_text().splitlines()]
    rounds = tmp_path / "data" / "rounds"
    write_jsonl(rounds / "train.jsonl", rows)
    for i, split in enumerate(("dev_r1", "dev_r2", "test_r1", "test_r2")):   # different rows per split
        write_jsonl(rounds / f"{split}.jsonl", rows[i:i + 5])
    task = TaskSpec(name="rounds", text_fields=("sentence1", "sentence2"), num_labels=2, local_name="rounds",
                    eval_splits=("dev_r1", "dev_r2", "test_r1", "test_r2"), selection_splits=("dev_r1", "dev_r2"),
                    selected_by={"dev_r1": "dev_r1", "test_r1": "dev_r1", "dev_r2": "dev_r2", "test_r2": "dev_r2"})
    config = short_config(model_dir, tmp_path / "data", task=task, phase1=PhaseConfig(epochs=2, lr=5e-4),
                          eval_every=1)
    result = finetune(config, tmp_path / "run")
    for phase in (result.phase1, result.phase2):
        for r in ("r1", "r2"):
            best = max(phase.history, key=lambda h: h["accuracy"][f"dev_{r}"])    # the first best
            assert phase.round_best_accuracy[f"dev_{r}"] == best["accuracy"][f"dev_{r}"]
            assert phase.round_best_accuracy[f"test_{r}"] == best["accuracy"][f"test_{r}"]
    for r in ("r1", "r2"):      # over both phases: the phase whose round dev was higher
        holder = max((result.phase1, result.phase2), key=lambda p: p.round_best_selection[f"dev_{r}"])
        assert result.round_best_accuracy[f"test_{r}"] == holder.round_best_accuracy[f"test_{r}"]
