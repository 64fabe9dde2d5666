import pytest
import torch

from ssmix.encoder import capture_embeddings, default_tmix_layers, hidden_mix, model_inputs
from ssmix.step import partner_rows
from tests.helpers import encode, tiny_bert

TEXTS = ["what is the capital city of the country", "who wrote the book", "a good movie", "the plot was boring",
         "how many animal", "where is the river", "the actor was great", "the food was bad"]


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("layer", [0, 1, 2])
def test_hidden_mix_with_weight_one_is_the_plain_forward(tokenizer, attn, layer):
    model = tiny_bert(attn=attn).eval()
    # Same lengths in both halves, so the union mask is each row's own mask.
    batch = encode(tokenizer, ["what is the capital", "who wrote the book", "a good movie .", "the plot was bad"])
    inputs = model_inputs(batch)
    with torch.no_grad():
        plain = model(**inputs).logits
        with hidden_mix(model, partner_rows(2), 1.0, layer, inputs["attention_mask"]):
            mixed = model(**inputs).logits
    assert torch.equal(plain, mixed)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_hidden_mix_interpolates_and_uses_union_mask(tokenizer, attn):
    model = tiny_bert(attn=attn).eval()
    batch = encode(tokenizer, TEXTS[:4])
    inputs = model_inputs(batch)
    partner = partner_rows(2)
    with torch.no_grad(), hidden_mix(model, partner, 0.7, 1, inputs["attention_mask"]):
        mixed = model(**inputs).logits
    assert not torch.allclose(mixed, model(**inputs).logits.detach())
    # Union mask: a short row mixed with a long row now attends to the long row's extra positions,
    # so weight 1 no longer equals the plain forward for it.
    with torch.no_grad(), hidden_mix(model, partner, 1.0, 1, inputs["attention_mask"]):
        union_logits = model(**inputs).logits
    plain = model(**inputs).logits.detach()
    short = (inputs["attention_mask"].sum(1) < inputs["attention_mask"][partner].sum(1)).nonzero().flatten()
    assert len(short) > 0
    assert not torch.allclose(union_logits[short], plain[short])


def test_default_tmix_layers():
    assert default_tmix_layers(12) == (7, 9, 12)
    assert default_tmix_layers(6) == (4, 5, 6)
    assert default_tmix_layers(2) == (2,)


def test_bad_layer_raises(tokenizer):
    model = tiny_bert()
    batch = encode(tokenizer, TEXTS[:2])
    with pytest.raises(ValueError, match="mix layer"):
        with hidden_mix(model, partner_rows(1), 0.5, 5, batch["attention_mask"]):
            pass


def test_captured_saliency_is_gradient_norm_zero_on_special(tokenizer):
    model = tiny_bert().train()
    batch = encode(tokenizer, TEXTS[:4])
    labels = torch.tensor([0, 1, 2, 0])
    with capture_embeddings(model) as captured:
        loss = torch.nn.functional.cross_entropy(model(**model_inputs(batch)).logits, labels, reduction="sum")
    loss.backward()
    sal = captured.saliency(batch["special_tokens_mask"])
    assert sal.shape == batch["input_ids"].shape
    assert (sal[batch["special_tokens_mask"] == 1] == 0).all()
    assert (sal[batch["special_tokens_mask"] == 0] > 0).all()
    assert torch.allclose(sal.amax(1), torch.ones(4))
    # Each example's saliency depends only on its own loss: recompute example 1 alone.
    model.zero_grad()
    with capture_embeddings(model) as alone:
        one = {k: v[1:2] for k, v in batch.items()}
        torch.nn.functional.cross_entropy(model(**model_inputs(one)).logits, labels[1:2]).backward()
    assert torch.allclose(alone.saliency(one["special_tokens_mask"]), sal[1:2], atol=1e-5)
