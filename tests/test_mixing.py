import pytest
import torch

from ssmix import mixing
from ssmix.segments import content_mask, find_segments
from tests.helpers import batch_from_lengths


def test_segments_found_for_single_and_pair():
    single = batch_from_lengths([3, 5])
    seg = find_segments(content_mask(single))
    assert seg.count == 1
    assert seg.starts.tolist() == [[1, 1]] and seg.lengths.tolist() == [[3, 5]]
    pair = batch_from_lengths([3, 2], pair_lengths=[4, 1])
    seg = find_segments(content_mask(pair))
    assert seg.count == 2
    assert seg.starts.tolist() == [[1, 1], [5, 4]]
    assert seg.lengths.tolist() == [[3, 2], [4, 1]]


def test_roberta_style_double_separator_gives_two_segments():
    # <s> p p </s></s> q </s> <pad>
    special = torch.tensor([[1, 0, 0, 1, 1, 0, 1, 1]])
    attention = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0]])
    seg = find_segments(content_mask({"special_tokens_mask": special, "attention_mask": attention}))
    assert seg.count == 2 and seg.lengths[:, 0].tolist() == [2, 1] and seg.starts[:, 0].tolist() == [1, 5]


def test_ssmix_replaces_least_salient_span_of_a_by_most_salient_span_of_b():
    a = batch_from_lengths([10])
    b = batch_from_lengths([10], start_id=5000)
    sal_a = torch.zeros(1, 12)
    sal_a[0, 1:11] = torch.tensor([5, 5, 5, 0.1, 0.2, 5, 5, 5, 5, 5.0])
    sal_b = torch.zeros(1, 12)
    sal_b[0, 1:11] = torch.tensor([0, 0, 0, 0, 0, 0, 9, 8, 0, 0.0])
    out = mixing.ssmix(a, b, sal_a, sal_b, 0.2)      # span = floor(0.2 * 10) = 2
    assert out.replaced[0].nonzero().flatten().tolist() == [4, 5]
    assert out.taken[0].nonzero().flatten().tolist() == [7, 8]
    assert out.batch["input_ids"][0, 4:6].tolist() == b["input_ids"][0, 7:9].tolist()
    untouched = torch.ones(12, dtype=torch.bool)
    untouched[4:6] = False
    assert torch.equal(out.batch["input_ids"][0, untouched], a["input_ids"][0, untouched])
    assert out.lam.tolist() == pytest.approx([0.2])


def test_ssmix_windows_never_touch_special_tokens_or_padding():
    a = batch_from_lengths([4, 7, 2], T=12)
    b = batch_from_lengths([6, 3, 9], T=12, start_id=5000)
    # Saliency that would pull windows onto [CLS], [SEP] and padding if they were allowed.
    sal_a = torch.ones(3, 12)
    sal_a[a["special_tokens_mask"] == 1] = -100.0
    sal_b = torch.zeros(3, 12)
    sal_b[b["special_tokens_mask"] == 1] = 100.0
    out = mixing.ssmix(a, b, sal_a, sal_b, 0.5)
    assert not (out.replaced & (a["special_tokens_mask"] == 1)).any()
    assert not (out.taken & (b["special_tokens_mask"] == 1)).any()
    assert torch.equal(out.batch["input_ids"][a["special_tokens_mask"] == 1], a["input_ids"][a["special_tokens_mask"] == 1])


def test_pairs_mix_per_segment_and_lambda_is_papers_2_over_11():
    # p^A has 5 tokens, q^A 6: floor(0.3*5)=1 and floor(0.3*6)=1 -> lambda = (1+1)/(5+6)
    a = batch_from_lengths([5], pair_lengths=[6])
    b = batch_from_lengths([4], pair_lengths=[7], T=a["input_ids"].shape[1], start_id=5000)
    sal_a, sal_b = torch.rand(1, a["input_ids"].shape[1]), torch.rand(1, a["input_ids"].shape[1])
    out = mixing.ssmix(a, b, sal_a, sal_b, 0.3)
    assert out.lam.item() == pytest.approx(2 / 11)
    replaced = out.replaced[0].nonzero().flatten().tolist()
    assert len(replaced) == 2
    assert 1 <= replaced[0] <= 5 and 7 <= replaced[1] <= 12          # one in p, one in q
    taken = out.taken[0].nonzero().flatten().tolist()
    assert 1 <= taken[0] <= 4 and 6 <= taken[1] <= 12                  # from p^B and q^B
    assert torch.equal(out.batch["token_type_ids"], a["token_type_ids"])


@pytest.mark.parametrize("name", ["ssmix", "random_span", "random_tokens"])
def test_lambda_equals_replaced_over_content_tokens(name):
    g = torch.Generator().manual_seed(3)
    lengths_a = torch.randint(1, 30, (16,), generator=g).tolist()
    lengths_b = torch.randint(1, 30, (16,), generator=g).tolist()
    pair_a = torch.randint(1, 20, (16,), generator=g).tolist()
    pair_b = torch.randint(1, 20, (16,), generator=g).tolist()
    a = batch_from_lengths(lengths_a, T=60, pair_lengths=pair_a)
    b = batch_from_lengths(lengths_b, T=60, pair_lengths=pair_b, start_id=5000)
    if name == "ssmix":
        out = mixing.ssmix(a, b, torch.rand(16, 60, generator=g), torch.rand(16, 60, generator=g), 0.3)
    else:
        out = getattr(mixing, name)(a, b, 0.3, generator=g)
    content = content_mask(a).sum(1).float()
    assert torch.allclose(out.lam, out.replaced.sum(1).float() / content)
    assert torch.equal(out.replaced.sum(1), out.taken.sum(1))
    changed = out.batch["input_ids"] != a["input_ids"]
    assert torch.equal(changed, out.replaced)       # every replaced token came from B (ids differ)
    for i in range(16):
        expected = sum(max(min(int(la * 0.3), lb), 1) for la, lb in ((lengths_a[i], lengths_b[i]), (pair_a[i], pair_b[i])))
        assert out.replaced[i].sum().item() == expected


def test_random_tokens_takes_b_tokens_at_same_position_of_segment():
    a = batch_from_lengths([8], pair_lengths=[5])
    b = batch_from_lengths([6], pair_lengths=[7], T=a["input_ids"].shape[1], start_id=5000)
    out = mixing.random_tokens(a, b, 0.5, generator=torch.Generator().manual_seed(0))
    ids = out.batch["input_ids"][0]
    for t in out.replaced[0].nonzero().flatten().tolist():
        token = ids[t].item()
        offset_a = t - 1 if t <= 8 else t - 10         # position inside its segment of A
        offset_b = (token - 5000) % 50
        assert offset_a == offset_b
        assert offset_a < (6 if t <= 8 else 7)


def test_b_shorter_than_span_leaves_example_unmixed():
    a = batch_from_lengths([6, 6], T=9)
    b = batch_from_lengths([0, 6], T=9, start_id=5000)    # B[0] has no content: no window
    out = mixing.ssmix(a, b, torch.rand(2, 9), torch.rand(2, 9), 0.5)
    assert out.lam[0].item() == 0.0 and not out.replaced[0].any()
    assert torch.equal(out.batch["input_ids"][0], a["input_ids"][0])
    assert out.lam[1].item() == pytest.approx(0.5)
    out = mixing.random_span(a, b, 0.5, generator=torch.Generator().manual_seed(1))
    assert out.lam[0].item() == 0.0 and not out.replaced[0].any()


def test_unk_replaces_content_tokens_and_keeps_label():
    a = batch_from_lengths([10, 3], T=13)
    out = mixing.unk(a, 0.3, unk_token_id=1, generator=torch.Generator().manual_seed(0))
    assert out.lam.tolist() == [0.0, 0.0]
    assert out.replaced.sum(1).tolist() == [3, 1]
    assert (out.batch["input_ids"][out.replaced] == 1).all()
    assert not (out.replaced & (a["special_tokens_mask"] == 1)).any()


def test_same_generator_seed_gives_same_mix_and_inputs_untouched():
    a = batch_from_lengths([12, 9, 15], T=20)
    b = batch_from_lengths([10, 14, 7], T=20, start_id=5000)
    before = {k: v.clone() for k, v in a.items()}
    for fn in (mixing.random_span, mixing.random_tokens):
        one = fn(a, b, 0.4, generator=torch.Generator().manual_seed(7))
        two = fn(a, b, 0.4, generator=torch.Generator().manual_seed(7))
        other = fn(a, b, 0.4, generator=torch.Generator().manual_seed(8))
        assert torch.equal(one.batch["input_ids"], two.batch["input_ids"])
        assert not torch.equal(one.batch["input_ids"], other.batch["input_ids"])
    for key in a:
        assert torch.equal(a[key], before[key])


@pytest.mark.parametrize("ratio", [0, -0.1, 1.5, "x"])
def test_bad_ratio_raises(ratio):
    a = batch_from_lengths([4])
    with pytest.raises(ValueError, match="mix_ratio"):
        mixing.random_span(a, a, ratio)


def test_bad_shapes_and_keys_raise():
    a = batch_from_lengths([4, 5])
    b = batch_from_lengths([4], T=a["input_ids"].shape[1])
    with pytest.raises(ValueError, match="same"):
        mixing.random_span(a, b, 0.1)
    with pytest.raises(ValueError, match="special_tokens_mask"):
        mixing.random_span({k: v for k, v in a.items() if k != "special_tokens_mask"}, a, 0.1)
    with pytest.raises(ValueError, match="saliency_b"):
        mixing.ssmix(a, a, torch.rand(2, a["input_ids"].shape[1]), torch.rand(3, 2), 0.1)
