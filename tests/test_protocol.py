"""The reference code's protocol, setting by setting: each named trial setting changes exactly
what it says, and `protocol: reference` / `--protocol reference` sets them all."""

import pytest
import torch
import torch.nn.functional as F

from ssmix import mixing
from ssmix.config import REFERENCE_PROTOCOL, TrialConfig, add_config_arguments, config_from_arguments
from ssmix.encoder import capture_embeddings, saliency_from_gradient
from ssmix.step import segment_saliency, train_step
from tests.conftest import PAIRS, encode, tiny_bert
from tests.test_mixing import batch_from_lengths


def test_protocol_reference_sets_every_setting_and_keeps_what_is_given():
    ours = TrialConfig(task="rte")
    reference = TrialConfig(task="rte", protocol="reference")
    for key, value in REFERENCE_PROTOCOL.items():
        assert getattr(reference, key) == value != getattr(ours, key), key
    assert TrialConfig(task="rte", protocol="reference", clip=0.5, tie="first").clip == 0.5   # given: kept
    # The command line: flags left at their default take the reference's values.
    import argparse

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    config = config_from_arguments(parser.parse_args(["--task", "rte", "--protocol", "reference",
                                                      "--segment-max-tokens", "32"]))
    assert config.segment_max_tokens == 32 and config.clip is None and config.tie == "last"
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


def test_segment_max_tokens_cuts_each_text_of_a_pair_before_pairing(tokenizer):
    from datasets import Dataset

    from ssmix.data import tokenize
    from ssmix.tasks import get_task

    long_a, long_b = "the movie was good " * 6, "the film was great " * 6
    ds = Dataset.from_list([{"sentence1": long_a, "sentence2": long_b, "label": 0}])
    task = get_task("rte")
    whole = tokenize(ds, task, tokenizer, 128)[0]
    cut = tokenize(ds, task, tokenizer, 128, segment_max_tokens=5)[0]
    sep = tokenizer.sep_token_id
    first_sep = cut["input_ids"].index(sep)
    assert first_sep - 1 == 5 and len(cut["input_ids"]) == 1 + 5 + 1 + 5 + 1      # [CLS] 5 [SEP] 5 [SEP]
    assert len(whole["input_ids"]) == 1 + 24 + 1 + 24 + 1
    # A single text is not a pair: untouched.
    single = Dataset.from_list([{"sentence": long_a, "label": 0}])
    assert tokenize(single, get_task("sst2"), tokenizer, 128, segment_max_tokens=5)[0]["input_ids"] == \
        tokenize(single, get_task("sst2"), tokenizer, 128)[0]["input_ids"]


def test_per_segment_saliency_is_each_segment_run_alone(tokenizer):
    model = tiny_bert(num_labels=2)
    firsts, seconds, labels = [p[0] for p in PAIRS], [p[1] for p in PAIRS], torch.tensor([p[2] for p in PAIRS])
    pair = encode(tokenizer, firsts, seconds)
    got = segment_saliency(model, pair, labels)
    for texts, segment in ((firsts, 0), (seconds, 1)):
        alone = encode(tokenizer, texts)                       # [CLS] text [SEP], padded
        with capture_embeddings(model) as captured:
            loss = F.cross_entropy(model(input_ids=alone["input_ids"], attention_mask=alone["attention_mask"]).logits,
                                   labels)
        (grad,) = torch.autograd.grad(loss, captured.output)
        expected = saliency_from_gradient(grad, alone["special_tokens_mask"])
        for row in range(len(texts)):
            types = pair["token_type_ids"][row]
            content = (pair["special_tokens_mask"][row] == 0) & (types == segment)
            length = int(content.sum())
            assert torch.allclose(got[row][content], expected[row, 1:1 + length], atol=1e-5), (row, segment)
    # The whole-pair saliency differs: the other segment is context.
    with capture_embeddings(model) as captured:
        loss = F.cross_entropy(model(input_ids=pair["input_ids"], attention_mask=pair["attention_mask"],
                                     token_type_ids=pair["token_type_ids"]).logits, labels)
    (grad,) = torch.autograd.grad(loss, captured.output)
    assert not torch.allclose(saliency_from_gradient(grad, pair["special_tokens_mask"]), got, atol=1e-3)


def test_nosal_start_shared_takes_b_at_a_s_start():
    a = batch_from_lengths([10, 10, 10, 10], T=12)
    b = batch_from_lengths([10, 10, 10, 10], T=12, start_id=5000)
    for start, same in (("shared", True), ("independent", False)):
        out = mixing.random_span(a, b, 0.3, generator=torch.Generator().manual_seed(4), start=start)
        starts_a = out.replaced.long().argmax(dim=1)
        starts_b = out.taken.long().argmax(dim=1)
        assert torch.equal(starts_a, starts_b) == same, start


def test_without_the_cap_b_s_window_runs_over_its_separator():
    a = batch_from_lengths([10], T=12)
    b = batch_from_lengths([2], T=12, start_id=5000)          # B: 2 tokens; span 0.5 * 10 = 5
    capped = mixing.ssmix(a, b, torch.rand(1, 12), torch.rand(1, 12), 0.5)
    assert capped.lam.item() == pytest.approx(2 / 10)          # capped at B's 2 tokens
    assert 3 not in capped.batch["input_ids"][0, 1:11].tolist()
    loose = mixing.ssmix(a, b, torch.rand(1, 12), torch.rand(1, 12), 0.5, cap_span_by_b=False)
    assert loose.lam.item() == pytest.approx(5 / 10)
    assert 3 in loose.batch["input_ids"][0, 1:11].tolist()    # B's [SEP] copied into A's content


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
    assert phase2.trial["pair_saliency"] == "per_segment" and phase2.trial["tie"] == "last"
