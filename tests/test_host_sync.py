"""A step that never waits for the device: nothing in it reads a value back to the host (no
`.item()`, `.tolist()`, `bool(tensor)`, `nonzero`, boolean-mask indexing, `.cpu()`...), so on a
GPU the host queues step after step. On CPU there is no device to wait for, so the tests catch
the calls themselves: the mixers run on the meta device (which has no values to read), and
whole steps run with every reading call of torch.Tensor watched. The one read a step makes on
purpose is of the host's own draws (λ', TMix's layer) from a CPU generator (``_host_draw``, which
refuses a generator on a device)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest
import torch

from ssmix import mixing
from ssmix.methods import METHODS
from ssmix.segments import cut_segments
from ssmix.step import MixupSettings, compute_gradients, partner_rows
from tests.helpers import PAIRS, encode, tiny_bert

PACKAGE = str(Path(mixing.__file__).resolve().parent)
READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero", "numpy", "cpu", "unique",
         "masked_select", "__array__")


@contextlib.contextmanager
def reads_from_ssmix():
    """Yields a list that collects each reading call made from a line of the ssmix package (the
    caller's frame), with the line; calls made by torch or the model's own code are not ours."""
    found: list[str] = []
    originals = {name: getattr(torch.Tensor, name) for name in READS}
    original_getitem = torch.Tensor.__getitem__

    def caller_is_ours() -> str | None:
        frame = sys._getframe(2)
        if not frame.f_code.co_filename.startswith(PACKAGE) or frame.f_code.co_name == "_host_draw":
            return None
        return f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}"

    def watch(name):
        def watched(self, *args, **kwargs):
            where = caller_is_ours()
            if where:
                found.append(f"{name} at {where}")
            return originals[name](self, *args, **kwargs)
        return watched

    def getitem(self, index):
        indices = index if isinstance(index, tuple) else (index,)
        if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices):
            where = caller_is_ours()
            if where:
                found.append(f"boolean-mask indexing at {where}")
        return original_getitem(self, index)

    try:
        for name in READS:
            setattr(torch.Tensor, name, watch(name))
        torch.Tensor.__getitem__ = getitem
        yield found
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
        torch.Tensor.__getitem__ = original_getitem


def pairs(tokenizer):
    return encode(tokenizer, [p[0] for p in PAIRS], [p[1] for p in PAIRS]), torch.tensor([p[2] for p in PAIRS])


def test_the_watch_catches_a_reading_call_of_the_package(tokenizer):
    """The watch itself: without ``num_segments`` the segments are counted on the host, a read
    the watch sees at its line."""
    batch, _ = pairs(tokenizer)
    with reads_from_ssmix() as found:
        mixing.unk(batch, 0.3, 1)
    assert found and found[0].startswith("item at segments.py:")
    with reads_from_ssmix() as found:
        mixing.unk(batch, 0.3, 1, num_segments=2)
    assert found == []


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("protocol", ["ours", "reference"])
def test_a_step_of_every_method_reads_nothing_back_from_the_device(tokenizer, method, protocol):
    batch, labels = pairs(tokenizer)
    reference = dict(cap_span_by_b=False, nosal_start="shared", segment_max_tokens=5, pair_saliency="per_segment")
    settings = MixupSettings(mix_ratio=0.3, unk_token_id=tokenizer.unk_token_id, pad_token_id=tokenizer.pad_token_id,
                             num_segments=2, **(reference if protocol == "reference" else {}))
    model = tiny_bert(num_labels=2)
    with reads_from_ssmix() as found:
        result = compute_gradients(model, batch, labels, method, settings, torch.Generator().manual_seed(0),
                                   host_generator=torch.Generator().manual_seed(1))
    assert found == [], f"{method} ({protocol} protocol) reads from the device: {found}"
    assert isinstance(result.loss, torch.Tensor) and torch.isfinite(result.loss)


def test_the_mixers_and_the_cut_run_on_the_meta_device(tokenizer):
    """The meta device has shapes but no values: any read, or any shape that depends on a
    value, fails there. Every input-level mixer and the reference cut run on it."""
    batch = {k: v.to("meta") for k, v in pairs(tokenizer)[0].items()}
    partner = partner_rows(3, "meta")
    other = {k: v[partner] for k, v in batch.items()}
    saliency = torch.empty(batch["input_ids"].shape, device="meta")
    results = [mixing.ssmix(batch, other, saliency, saliency[partner], 0.3, num_segments=2),
               mixing.ssmix(batch, other, saliency, saliency[partner], 0.3, cap_span_by_b=False, num_segments=2),
               mixing.random_span(batch, other, 0.3, num_segments=2),
               mixing.random_span(batch, other, 0.3, start="shared", cap_span_by_b=False, num_segments=2),
               mixing.random_tokens(batch, other, 0.3, num_segments=2),
               mixing.unk(batch, 0.3, 1, num_segments=2)]
    for result in results:
        assert result.batch["input_ids"].device.type == "meta" and result.lam.shape == (6,)
    cut, source = cut_segments(batch, 4, 0, num_segments=2)
    assert cut["input_ids"].device.type == "meta" and source.shape == batch["input_ids"].shape
