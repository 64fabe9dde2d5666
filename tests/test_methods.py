import pytest
import torch
import torch.nn.functional as F

from ssmix import mixing
from ssmix.encoder import hidden_mix, model_inputs
from ssmix.methods import METHODS, get_method
from ssmix.step import (
    MixupSettings,
    compute_gradients,
    partner_rows,
    plan_mix,
    separate_saliency,
    train_step,
)
from tests.helpers import encode, tiny_bert

TEXTS = ["what is the capital city of the country", "who wrote the book", "a good movie", "the plot was boring",
         "how many animal in the river", "where is the river", "the actor was great and funny", "the food was bad"]
LABELS = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])


def grads(model):
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def reference_gradients(model, batch, labels, method, settings, seed):
    """The four-term mean of docs/method.md §2 computed directly and backpropagated once."""
    model.zero_grad(set_to_none=True)
    n = labels.shape[0] // 2
    A = slice(0, n)
    B = slice(n, 2 * n)
    partner = partner_rows(n)
    generator = torch.Generator().manual_seed(seed)
    logits = model(**model_inputs(batch)).logits
    ce_a, ce_b = F.cross_entropy(logits[A], labels[A]), F.cross_entropy(logits[B], labels[B])
    saliency = None
    if method == "ssmix":
        saliency = separate_saliency(model, batch, labels, n)
    plan = plan_mix(get_method(method), model, batch, partner, settings, generator, saliency)
    ctx = (hidden_mix(model, partner, plan.hidden_weight, plan.hidden_layer, batch["attention_mask"])
           if plan.hidden_layer is not None else torch.enable_grad())
    with ctx:
        mixed = model(**plan.inputs).logits

    def mixloss(rows, other_rows):
        lam = plan.lam[rows]
        return ((1 - lam) * F.cross_entropy(mixed[rows], labels[rows], reduction="none")
                + lam * F.cross_entropy(mixed[rows], labels[other_rows], reduction="none")).mean()

    loss = torch.stack([ce_a, ce_b, mixloss(A, B), mixloss(B, A)]).mean()
    loss.backward()
    return grads(model)


CASES = [(m, "free") for m in METHODS if m != "none"] + [("ssmix", "separate")]


@pytest.mark.parametrize("method,saliency", CASES)
def test_step_gradients_equal_four_term_mean(tokenizer, method, saliency):
    model = tiny_bert(dropout=0.0)
    batch = encode(tokenizer, TEXTS)
    settings = MixupSettings(mix_ratio=0.3, saliency=saliency, unk_token_id=tokenizer.unk_token_id)
    model.zero_grad(set_to_none=True)
    compute_gradients(model, batch, LABELS, method, settings, torch.Generator().manual_seed(5))
    got = grads(model)
    expected = reference_gradients(model, batch, LABELS, method, settings, seed=5)
    assert got.keys() == expected.keys()
    for name in got:
        assert torch.allclose(got[name], expected[name], atol=1e-6, rtol=1e-5), name


def test_none_is_plain_cross_entropy(tokenizer):
    model = tiny_bert()
    batch = encode(tokenizer, TEXTS)
    compute_gradients(model, batch, LABELS, "none")
    got = grads(model)
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(**model_inputs(batch)).logits, LABELS).backward()
    for name, g in grads(model).items():
        assert torch.allclose(got[name], g, atol=1e-7)


def record_ssmix_calls(monkeypatch) -> list:
    """Every call of mixing.ssmix made by the step: (arguments, result)."""
    calls, original = [], mixing.ssmix
    monkeypatch.setattr(mixing, "ssmix", lambda *a, **k: calls.append((a, original(*a, **k))) or calls[-1][1])
    return calls


def test_ssmix_step_mixes_by_saliency_of_clean_loss(tokenizer, monkeypatch):
    """The free saliency (from the clean backward inside the step) selects the same spans as the
    reference code's separate saliency pass."""
    model = tiny_bert(dropout=0.0)
    batch = encode(tokenizer, TEXTS)
    calls = record_ssmix_calls(monkeypatch)
    compute_gradients(model, batch, LABELS, "ssmix", MixupSettings(mix_ratio=0.3, saliency="free"))
    assert len(calls) == 1
    free_mix = calls[0][1]
    n = 4
    sal = separate_saliency(model, batch, LABELS, n)
    partner = partner_rows(n)
    expected = mixing.ssmix(batch, {k: v[partner] for k, v in batch.items()}, sal, sal[partner], 0.3)
    assert torch.equal(free_mix.batch["input_ids"], expected.batch["input_ids"])
    assert torch.equal(free_mix.replaced, expected.replaced) and free_mix.replaced.any()


def test_odd_batch_drops_last_example_from_mixed_half_only(tokenizer, monkeypatch):
    model = tiny_bert(dropout=0.0)
    batch = encode(tokenizer, TEXTS[:7])
    calls = record_ssmix_calls(monkeypatch)
    result = compute_gradients(model, batch, LABELS[:7], "ssmix", MixupSettings(mix_ratio=0.3))
    assert result.examples == 7 and result.mixed_loss is not None
    assert calls[0][0][0]["input_ids"].shape[0] == 6             # pairs A[0:3] with B[3:6]; row 7 unmixed
    with torch.no_grad():
        clean = F.cross_entropy(model(**model_inputs(batch)).logits, LABELS[:7]).item()
    assert float(result.clean_loss) == pytest.approx(clean, rel=1e-5)    # the clean half sees all 7


def test_train_step_clips_after_backward_and_updates(tokenizer):
    """The update is lr times the clipped gradient of this step's loss: clipping comes after
    backward (the reference code clips before it, so it never clips the update)."""
    model = tiny_bert()
    batch = encode(tokenizer, TEXTS)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    train_step(model, optimizer, batch, LABELS * 0 + 2, "embedmix", generator=torch.Generator().manual_seed(0),
               clip_norm=1e-3)
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    total = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads.values()]))
    assert total.item() == pytest.approx(1e-3, rel=1e-3)               # the gradient was clipped
    moved = torch.linalg.vector_norm(torch.stack([(before[n] - p.detach()).norm()
                                                  for n, p in model.named_parameters() if n in grads]))
    assert moved.item() == pytest.approx(0.5 * 1e-3, rel=1e-3)          # the update is lr x the clipped gradient
    for name, param in model.named_parameters():
        if name in grads:
            torch.testing.assert_close(before[name] - param.detach(), 0.5 * grads[name])


def test_unknown_method_and_missing_unk_id(tokenizer):
    with pytest.raises(ValueError, match="known methods"):
        get_method("mixup")
    model = tiny_bert()
    batch = encode(tokenizer, TEXTS)
    with pytest.raises(ValueError, match="unk_token_id"):
        compute_gradients(model, batch, LABELS, "unk", MixupSettings())


@pytest.mark.parametrize("method", list(METHODS))
def test_bf16_autocast_step_matches_fp32_within_bf16_precision(tokenizer, method):
    """One step of every method under CPU bf16 autocast (as `--bf16` runs on CUDA): the gradient
    points the same way as fp32's and differs by about bf16's precision (8 mantissa bits, a
    relative rounding of 2^-8 per operation, accumulated over the network)."""
    batch, labels = encode(tokenizer, TEXTS), LABELS
    settings = MixupSettings(mix_ratio=0.3, unk_token_id=tokenizer.unk_token_id)
    results = {}
    for dtype in (None, torch.bfloat16):
        model = tiny_bert(dropout=0.0)          # no dropout: the two runs see the same network
        torch.manual_seed(0)
        result = compute_gradients(model, batch, labels, method, settings, torch.Generator().manual_seed(3),
                                   autocast_dtype=dtype)
        results[dtype] = (torch.cat([g.flatten() for g in grads(model).values()]), result.loss)
    (fp32, loss32), (bf16, loss16) = results[None], results[torch.bfloat16]
    assert not torch.equal(fp32, bf16)          # autocast did compute in bf16
    assert torch.isfinite(bf16).all() and abs(loss16 - loss32) <= 0.02 * abs(loss32)
    assert F.cosine_similarity(fp32, bf16, dim=0) > 0.99
    assert (bf16 - fp32).norm() / fp32.norm() < 0.1
