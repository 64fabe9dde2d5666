"""The reference code's protocol, setting by setting: each named trial setting changes exactly
what it says, and `protocol: reference` / `--protocol reference` sets them all."""

import pytest
import torch
import torch.nn.functional as F

from ssmix import mixing
from ssmix.config import REFERENCE_PROTOCOL, TrialConfig, add_config_arguments, config_from_arguments
from ssmix.encoder import capture_embeddings, saliency_from_gradient
from ssmix.step import segment_saliency, train_step
from tests.helpers import PAIRS, batch_from_lengths, encode, tiny_bert


def test_protocol_reference_sets_every_setting_and_keeps_what_is_given():
    ours = TrialConfig(task="rte")
    reference = TrialConfig(task="rte", protocol="reference")
    for key, value in REFERENCE_PROTOCOL.items():
        assert getattr(reference, key) == value != getattr(ours, key), key
    assert TrialConfig(task="rte", protocol="reference", clip=0.5).clip == 0.5   # given: kept
    # The command line: flags left at their default take the reference's values.
    import argparse

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    config = config_from_arguments(parser.parse_args(["--task", "rte", "--protocol", "reference",
                                                      "--segment-max-tokens", "32"]))
    assert config.segment_max_tokens == 32 and config.clip is None and config.cap_span_by_b is False
    assert config_from_arguments(parser.parse_args(["--task", "rte", "--clip", "none"])).clip is None


def test_clip_none_leaves_the_gradient_as_it_is(tokenizer):
    batch, labels = encode(tokenizer, [p[0] for p in PAIRS]), torch.tensor([p[2] for p in PAIRS])
    norms = {}
    for clip in (None, 1e-3):
        model = tiny_bert()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)   # keep the gradient, change nothing
        train_step(model, optimizer, batch, labels, "none", clip_norm=clip)
        norms[clip] = torch.norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
    assert norms[1e-3].item() == pytest.approx(1e-3, rel=1e-3)
    assert norms[None].item() > 10 * norms[1e-3].item()


def pair_batch(first_lengths, second_lengths, T=None, start_id=10):
    """[CLS] p [SEP] q [SEP] [PAD]... with the second text's token type 1, as a tokenizer makes it."""
    batch = batch_from_lengths(first_lengths, T=T, pair_lengths=second_lengths, start_id=start_id)
    for row, length in enumerate(first_lengths):
        batch["token_type_ids"][row, length + 2:] = batch["attention_mask"][row, length + 2:]
    return batch


def reference_settings(**changes):
    from ssmix.step import MixupSettings

    values = dict(mix_ratio=0.1, cap_span_by_b=False, nosal_start="shared", segment_max_tokens=64,
                  pad_token_id=0, num_segments=2)
    return MixupSettings(**{**values, **changes})


# Rule 1: the cut is made on the copy that is mixed, to 62 text tokens per segment ------------------


def test_pairs_are_tokenized_whole_for_the_clean_loss_and_evaluation(tokenizer):
    from datasets import Dataset

    from ssmix.data import tokenize
    from ssmix.tasks import get_task

    long_a, long_b = "the movie was good " * 20, "the film was great " * 6
    ds = Dataset.from_list([{"sentence1": long_a, "sentence2": long_b, "label": 0}])
    whole = tokenize(ds, get_task("rte"), tokenizer, 128)[0]
    assert len(whole["input_ids"]) == 1 + 80 + 1 + 24 + 1        # the clean loss and evaluation see it all


def test_reference_cut_keeps_62_text_tokens_of_each_segment_and_moves_the_rest_up():
    from ssmix.segments import cut_segments

    pair = pair_batch([70, 5], [4, 66], T=80)
    cut, source = cut_segments(pair, 64, pad_token_id=0, num_segments=2)
    first = pair["input_ids"][0]
    expected = torch.cat([first[:63], first[71:72], first[72:77]])          # [CLS] 62 [SEP] 4 [SEP]
    assert cut["input_ids"][0, :69].tolist() == expected.tolist() and cut["input_ids"][0, 69:].eq(0).all()
    assert cut["attention_mask"][0].sum() == 69 and cut["token_type_ids"][0, 64:69].eq(1).all()
    assert cut["token_type_ids"][0, :64].eq(0).all() and cut["special_tokens_mask"][0, 69:].eq(1).all()
    second = pair["input_ids"][1]
    assert cut["input_ids"][1, :69].tolist() == second[:69].tolist()       # [CLS] 5 [SEP] then 62 of 66
    assert cut["input_ids"][1, 69] == 3 and cut["attention_mask"][1].sum() == 70
    assert torch.equal(pair["input_ids"].gather(1, source)[:, :69], cut["input_ids"][:, :69])


def test_ssmix_under_the_cut_mixes_the_cut_copy_and_counts_its_tokens_in_lambda():
    from ssmix.methods import get_method
    from ssmix.step import partner_rows, plan_mix

    pair = pair_batch([70, 20], [10, 10], T=90)
    saliency = torch.rand(2, 90, generator=torch.Generator().manual_seed(0)) * (pair["special_tokens_mask"] == 0)
    plan = plan_mix(get_method("ssmix"), None, pair, partner_rows(1), reference_settings(pair_saliency="whole"),
                    None, saliency, torch.tensor([0, 1]))
    a = plan.sides.a
    assert a["attention_mask"][0].sum() == 1 + 62 + 1 + 10 + 1          # the first row's copy is cut
    assert plan.inputs["input_ids"].shape == pair["input_ids"].shape
    # spans of 6 (62 tokens) and 1; lam = 7 / (62 + 10); the second row (not cut): 2 and 1 of 30
    assert plan.lam.tolist() == pytest.approx([7 / 72, 3 / 30])
    assert plan.mix.replaced[0].sum() == 7 and plan.mix.replaced[0, 64:].sum() == 1


def test_in_the_second_direction_ssmix_takes_from_a_only_within_a_s_cut():
    """The reference cuts A's length in place in the first direction, so when B's row is mixed
    with A, A's window stays inside A's first 62 text tokens, whatever A's saliency beyond."""
    from ssmix.methods import get_method
    from ssmix.step import partner_rows, plan_mix

    pair = pair_batch([100, 20], [10, 10], T=120)
    saliency = torch.full((2, 120), 0.1) * (pair["special_tokens_mask"] == 0)
    saliency[0, 80:90] = 1.0                                    # A's most salient words lie past the cut
    saliency[0, 30:32] = 0.5
    plan = plan_mix(get_method("ssmix"), None, pair, partner_rows(1), reference_settings(pair_saliency="whole"),
                    None, saliency, torch.tensor([0, 1]))
    taken = plan.mix.taken[1].nonzero().flatten().tolist()    # B's row (20 tokens: span 2) takes from A
    assert taken[:2] == [30, 31]
    unlimited = plan_mix(get_method("ssmix"), None, pair, partner_rows(1),
                         reference_settings(pair_saliency="whole", segment_max_tokens=None), None, saliency,
                         torch.tensor([0, 1]))
    assert unlimited.mix.taken[1].nonzero().flatten().tolist()[:2] == [80, 81]


# Rule 2: per-segment saliency runs each segment with its own token type ----------------------------


def test_per_segment_saliency_runs_each_segment_alone_with_its_own_token_type(tokenizer):
    model = tiny_bert(num_labels=2)
    firsts, seconds, labels = [p[0] for p in PAIRS], [p[1] for p in PAIRS], torch.tensor([p[2] for p in PAIRS])
    pair = encode(tokenizer, firsts, seconds)
    got = segment_saliency(model, pair, labels)
    for texts, segment in ((firsts, 0), (seconds, 1)):
        alone = encode(tokenizer, texts)                       # [CLS] text [SEP], padded
        types = alone["attention_mask"] * segment             # the second segment: type 1, [CLS] too
        with capture_embeddings(model) as captured:
            loss = F.cross_entropy(model(input_ids=alone["input_ids"], attention_mask=alone["attention_mask"],
                                         token_type_ids=types).logits, labels)
        (grad,) = torch.autograd.grad(loss, captured.output)
        expected = saliency_from_gradient(grad, alone["special_tokens_mask"])
        for row in range(len(texts)):
            content = (pair["special_tokens_mask"][row] == 0) & (pair["token_type_ids"][row] == segment)
            length = int(content.sum())
            assert torch.allclose(got[row][content], expected[row, 1:1 + length], atol=1e-5), (row, segment)
    # The whole-pair saliency differs: the other segment is context.
    with capture_embeddings(model) as captured:
        loss = F.cross_entropy(model(input_ids=pair["input_ids"], attention_mask=pair["attention_mask"],
                                     token_type_ids=pair["token_type_ids"]).logits, labels)
    (grad,) = torch.autograd.grad(loss, captured.output)
    assert not torch.allclose(saliency_from_gradient(grad, pair["special_tokens_mask"]), got, atol=1e-3)


# Rule 3: a B one or two tokens short of the span lends the window from its [CLS] -------------------


@pytest.mark.parametrize("b_length, copied", [(3, [2, 5000, 5001, 5002]), (2, [2, 5000, 5001, 3]), (1, None)])
def test_without_the_cap_a_short_b_lends_the_window_from_its_cls(b_length, copied):
    a = batch_from_lengths([40], T=44)
    b = batch_from_lengths([b_length], T=44, start_id=5000)          # span = floor(0.1 * 40) = 4
    out = mixing.ssmix(a, b, torch.rand(1, 44), torch.rand(1, 44), 0.1, cap_span_by_b=False)
    if copied is None:                                       # shorter still: the reference leaves it unmixed
        assert out.lam.item() == 0 and not out.replaced.any()
        return
    assert out.lam.item() == pytest.approx(4 / 40)
    assert out.batch["input_ids"][0][out.replaced[0]].tolist() == copied
    capped = mixing.ssmix(a, b, torch.rand(1, 44), torch.rand(1, 44), 0.1)     # ours: a span of B's length
    assert capped.lam.item() == pytest.approx(b_length / 40) and 2 not in capped.batch["input_ids"][0, 1:41]


def test_without_the_cap_the_cls_window_of_a_second_segment_takes_the_cls_not_the_separator():
    a = batch_from_lengths([10], T=60, pair_lengths=[40])
    b = batch_from_lengths([10], T=60, pair_lengths=[3], start_id=5000)
    out = mixing.ssmix(a, b, torch.rand(1, 60), torch.rand(1, 60), 0.1, cap_span_by_b=False)
    second = out.batch["input_ids"][0, 12:][out.replaced[0, 12:]].tolist()
    assert second == [2, 5050, 5051, 5052]                   # [CLS], as the reference's split pair has it


# Rule 4: one start for A and B, B's [SEP] included, unmixed when it does not fit --------------------


def shared_span(monkeypatch, a, b, u_first, ratio=0.1):
    """random_span with start="shared" and its uniform draw for the start fixed to ``u_first``."""
    monkeypatch.setattr(mixing, "_uniform", lambda shape, like, generator: torch.full(shape, u_first))
    return mixing.random_span(a, b, ratio, start="shared", cap_span_by_b=False)


def test_shared_start_copies_b_at_a_s_offset_with_b_s_separator(monkeypatch):
    a = batch_from_lengths([40], T=44)
    b = batch_from_lengths([12], T=44, start_id=5000)          # span 4; starts 0..37 (0 = before A's text)
    out = shared_span(monkeypatch, a, b, 10.5 / 38)           # draw 10: B's text 10-12 and its [SEP]
    assert out.replaced[0].nonzero().flatten().tolist() == [10, 11, 12, 13]
    assert out.batch["input_ids"][0, 10:14].tolist() == [5009, 5010, 5011, 3]
    assert out.lam.item() == pytest.approx(4 / 40)
    unmixed = shared_span(monkeypatch, a, b, 11.5 / 38)       # one further runs past its [SEP]: unmixed
    assert unmixed.lam.item() == 0 and not unmixed.replaced.any()


def test_shared_start_may_start_before_a_s_text_and_counts_the_whole_window(monkeypatch):
    a = batch_from_lengths([40], T=44)
    b = batch_from_lengths([12], T=44, start_id=5000)
    out = shared_span(monkeypatch, a, b, 0.0)                 # draw 0: the window starts on [CLS]
    assert out.replaced[0].nonzero().flatten().tolist() == [1, 2, 3]
    assert out.batch["input_ids"][0, :4].tolist() == [2, 5000, 5001, 5002]
    assert out.lam.item() == pytest.approx(4 / 40)           # as the reference: the window, not what changed


# Rule 5: ties -------------------------------------------------------------------------------------


def test_the_reference_breaks_ties_as_torch_argmax_does_the_first_and_so_do_we():
    """The reference picks windows with torch.argmin / torch.argmax, which return the first of
    equal values; `tie: first` (our default, hence not a protocol setting) does the same."""
    pooled = torch.tensor([100.0, 0.5, 0.2, 0.2, 0.7, 100.0])
    assert torch.argmin(pooled).item() == 2 and torch.argmax(-pooled).item() == 2
    a = batch_from_lengths([8], T=10)
    b = batch_from_lengths([8], T=10, start_id=5000)
    flat = torch.ones(1, 10)
    assert mixing.ssmix(a, b, flat, flat, 0.25).replaced[0].nonzero().flatten().tolist() == [1, 2]
    assert TrialConfig(task="rte", protocol="reference").tie == "first"


def test_tie_picks_the_first_or_the_last_of_equal_windows():
    a = batch_from_lengths([8], T=10)
    b = batch_from_lengths([8], T=10, start_id=5000)
    flat = torch.ones(1, 10)                                   # every window equally salient
    first = mixing.ssmix(a, b, flat, flat, 0.25)
    last = mixing.ssmix(a, b, flat, flat, 0.25, tie="last")
    assert first.replaced[0].nonzero().flatten().tolist() == [1, 2]     # content starts at 1
    assert last.replaced[0].nonzero().flatten().tolist() == [7, 8]      # content ends at 8
    assert first.taken[0].nonzero().flatten().tolist() == [1, 2]
    assert last.taken[0].nonzero().flatten().tolist() == [7, 8]


def test_nosal_start_independent_draws_b_s_window_on_its_own():
    a = batch_from_lengths([10, 10, 10, 10], T=12)
    b = batch_from_lengths([10, 10, 10, 10], T=12, start_id=5000)
    out = mixing.random_span(a, b, 0.3, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(out.replaced.long().argmax(dim=1), out.taken.long().argmax(dim=1))


def test_a_sweep_file_asks_for_the_reference_protocol(tmp_path, model_dir, data_dir):
    import yaml

    from ssmix.sweep import load_sweep, plan_cells

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "ref", "model": model_dir, "tasks": ["rte"], "methods": ["ssmix"],
                                    "seeds": [0], "data_dir": str(data_dir), "trial": {"protocol": "reference"}}))
    cells = plan_cells(load_sweep(path))
    for cell in cells:
        assert cell.trial["clip"] is None and cell.trial["train_fraction"] == 0.75
    phase2 = next(c for c in cells if c.kind == "phase2")
    assert phase2.trial["pair_saliency"] == "per_segment" and phase2.trial["segment_max_tokens"] == 64
    # The cut is made on what phase 2 mixes: phase 1 (whole pairs) is the same cell whatever the cut.
    path.write_text(yaml.safe_dump({"name": "ref", "model": model_dir, "tasks": ["rte"], "methods": ["ssmix"],
                                    "seeds": [0], "data_dir": str(data_dir),
                                    "trial": {"protocol": "reference", "segment_max_tokens": 32}}))
    other = plan_cells(load_sweep(path))
    assert [c.id for c in cells if c.kind == "phase1"] == [c.id for c in other if c.kind == "phase1"]
    assert [c.id for c in cells if c.kind == "phase2"] != [c.id for c in other if c.kind == "phase2"]
