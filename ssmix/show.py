"""Seeing a mix, as the paper's Figure 1 shows it: A and B with per-token saliency shading, the
replaced span of A, the span taken from B, the mixed text and λ. In the terminal (rich) or as
an HTML page."""

from __future__ import annotations

import html
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ssmix import mixing
from ssmix.encoder import capture_embeddings, model_inputs
from ssmix.tasks import TaskSpec


@dataclass
class ShownMix:
    tokens_a: list[str]
    tokens_b: list[str]
    tokens_mixed: list[str]
    saliency_a: list[float]
    saliency_b: list[float]
    replaced: list[bool]     # positions of A replaced (and of the mixed text that came from B)
    taken: list[bool]        # positions of B copied
    lam: float
    label_a: int
    label_b: int


def compute_mixes(model, tokenizer, batch: dict, labels: torch.Tensor, mix_ratio: float) -> list[ShownMix]:
    """Saliency of each example's own loss (dropout off, for a stable picture), then SSMix of
    the first half (A) with the second half (B), with the default span rules (``ssmix
    show-mix``; a sweep's page shows what its own step made instead: ``record_mixes``)."""
    model.eval()
    model.zero_grad(set_to_none=True)
    with capture_embeddings(model) as captured:
        loss = F.cross_entropy(model(**model_inputs(batch)).logits, labels, reduction="sum")
    loss.backward()
    saliency = captured.saliency(batch["special_tokens_mask"])
    model.zero_grad(set_to_none=True)
    n = labels.shape[0] // 2
    a = {k: v[:n] for k, v in batch.items()}
    b = {k: v[n:2 * n] for k, v in batch.items()}
    out = mixing.ssmix(a, b, saliency[:n], saliency[n:2 * n], mix_ratio)
    record = {"ids_a": a["input_ids"], "mask_a": a["attention_mask"], "ids_b": b["input_ids"],
              "mask_b": b["attention_mask"], "ids_mixed": out.batch["input_ids"], "replaced": out.replaced,
              "taken": out.taken, "saliency_a": saliency[:n], "saliency_b": saliency[n:2 * n], "lam": out.lam,
              "label_a": labels[:n], "label_b": labels[n:2 * n]}
    return shown_mixes({k: v.tolist() for k, v in record.items()}, tokenizer)


def record_mixes(plan, partner: torch.Tensor, labels: torch.Tensor, n: int = 4) -> dict:
    """The first ``n`` mixes a training step made (``ssmix.step.OnMix``), as plain lists that a
    JSON file keeps: A as it was mixed (under ``segment_max_tokens`` its cut copy) and B, their
    ids and masks, the mixed ids, which positions of A were replaced and of B taken, their
    saliency (zeros for a method without), λ and the labels."""
    n = min(n, partner.shape[0])
    rows = torch.arange(n, device=partner.device)
    mix, sides = plan.mix, plan.sides
    zeros = torch.zeros_like(sides.a["input_ids"][:n], dtype=torch.float)
    record = {"ids_a": sides.a["input_ids"][rows], "mask_a": sides.a["attention_mask"][rows],
              "ids_b": sides.b["input_ids"][rows], "mask_b": sides.b["attention_mask"][rows],
              "ids_mixed": mix.batch["input_ids"][rows], "replaced": mix.replaced[rows], "taken": mix.taken[rows],
              "saliency_a": sides.saliency_a[rows] if sides.saliency_a is not None else zeros,
              "saliency_b": sides.saliency_b[rows] if sides.saliency_b is not None else zeros,
              "lam": mix.lam[rows], "label_a": labels[rows], "label_b": labels[partner[:n]]}
    return {key: value.detach().float().cpu().tolist() if value.is_floating_point() else value.cpu().tolist()
            for key, value in record.items()}


def shown_mixes(record: dict, tokenizer) -> list[ShownMix]:
    """A record of mixes (``record_mixes``) as the page and the terminal show them."""
    shown = []
    for i in range(len(record["lam"])):
        keep_a = [bool(m) for m in record["mask_a"][i]]
        keep_b = [bool(m) for m in record["mask_b"][i]]

        def kept(values, keep):
            return [v for v, k in zip(values, keep) if k]

        shown.append(ShownMix(
            tokens_a=tokenizer.convert_ids_to_tokens(kept(record["ids_a"][i], keep_a)),
            tokens_b=tokenizer.convert_ids_to_tokens(kept(record["ids_b"][i], keep_b)),
            tokens_mixed=tokenizer.convert_ids_to_tokens(kept(record["ids_mixed"][i], keep_a)),
            saliency_a=kept(record["saliency_a"][i], keep_a), saliency_b=kept(record["saliency_b"][i], keep_b),
            replaced=[bool(v) for v in kept(record["replaced"][i], keep_a)],
            taken=[bool(v) for v in kept(record["taken"][i], keep_b)],
            lam=float(record["lam"][i]), label_a=int(record["label_a"][i]), label_b=int(record["label_b"][i])))
    return shown


def to_rich(mix: ShownMix, brackets: bool = False):
    """Rich lines for one mix: saliency as a red background, spans in colour; ``brackets`` also
    marks each span with [[ ]] (for output that is not a terminal, where colour is lost)."""
    from rich.text import Text

    def line(name, tokens, saliency, marked, mark_style):
        text = Text(f"{name}: ", style="bold")
        inside = False
        for token, s, m in zip(tokens, saliency, marked):
            if brackets and bool(m) != inside:
                text.append("[[ " if m else "]] ")
                inside = bool(m)
            shade = int(255 - 200 * s)
            style = f"on rgb(255,{shade},{shade})" + (f" {mark_style}" if m else "")
            text.append(token, style=style)
            text.append(" ")
        if inside:
            text.append("]]")
        return text

    lines = [line(f"A (label {mix.label_a})", mix.tokens_a, mix.saliency_a, mix.replaced, "bold underline blue"),
             line(f"B (label {mix.label_b})", mix.tokens_b, mix.saliency_b, mix.taken, "bold underline green"),
             line("mixed", mix.tokens_mixed, [0.0] * len(mix.tokens_mixed), mix.replaced, "bold green")]
    summary = Text(f"λ = {mix.lam:.3f}: label = {1 - mix.lam:.3f}·y{mix.label_a} + {mix.lam:.3f}·y{mix.label_b}",
                   style="italic")
    return lines + [summary]


def to_html(mixes: list[ShownMix], title: str) -> str:
    def tokens_html(tokens, saliency, marked, klass):
        spans = []
        for token, s, m in zip(tokens, saliency, marked):
            style = f"background: rgba(220, 40, 40, {0.85 * s:.2f})"
            spans.append(f"<span class='tok {klass if m else ''}' style='{style}' title='saliency {s:.2f}'>"
                         f"{html.escape(token)}</span>")
        return " ".join(spans)

    blocks = []
    for i, m in enumerate(mixes):
        blocks.append(f"""<div class="ex"><h3>Example {i + 1}</h3>
<p><b>A</b> (label {m.label_a}): {tokens_html(m.tokens_a, m.saliency_a, m.replaced, 'replaced')}</p>
<p><b>B</b> (label {m.label_b}): {tokens_html(m.tokens_b, m.saliency_b, m.taken, 'taken')}</p>
<p><b>mixed</b>: {tokens_html(m.tokens_mixed, [0.0] * len(m.tokens_mixed), m.replaced, 'taken')}</p>
<p class="lam">λ = {m.lam:.3f}: label = {1 - m.lam:.3f}·y<sub>A</sub> + {m.lam:.3f}·y<sub>B</sub></p></div>""")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em;color:#222}} .tok{{padding:2px 3px;border-radius:3px;
font-family:monospace;font-size:15px;line-height:2}} .replaced{{outline:2px solid #1f5fbf}}
.taken{{outline:2px solid #1a8a2a}} .ex{{border-bottom:1px solid #ccc;padding-bottom:.5em}} .lam{{color:#555}}</style>
</head><body><h1>{html.escape(title)}</h1>
<p>Red shading: saliency (gradient norm of the example's own loss, normalised per example).
<span class="tok replaced">blue box</span>: the positions of A that were replaced (SSMix: its least salient span);
<span class="tok taken">green box</span>: the tokens of B copied into them (SSMix: its most salient span).</p>
{''.join(blocks)}</body></html>
"""


def load_examples(task: str | TaskSpec, model_name: str, data_dir: str | None, n: int, max_length: int = 128,
                  weights: str | None = None):
    """The first 2n training examples, the tokenizer of ``model_name`` and a model with the
    weights of ``weights`` (a checkpoint directory) or of ``model_name``."""
    from transformers import AutoTokenizer

    from ssmix.data import load_task_data, rows_at
    from ssmix.models import load_classifier, resolve_model_path
    from ssmix.tasks import get_task

    path = resolve_model_path(model_name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    task = get_task(task)   # a built-in's name, or a custom task's spec
    data = load_task_data(task, tokenizer, data_dir=data_dir, max_length=max_length, max_eval_examples=1)
    torch.manual_seed(0)
    model = load_classifier(weights or path, task.num_labels)
    batch, labels = data.collator(rows_at(data.train, range(min(2 * n, len(data.train)))))
    return model, tokenizer, batch, labels


def recorded_mix_page(record: dict, model_name: str, title: str) -> str:
    """The page (HTML) of the mixes a run's step made (``record_mixes``), tokens from the model's
    tokenizer."""
    from transformers import AutoTokenizer

    from ssmix.models import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(model_name))
    return to_html(shown_mixes(record, tokenizer), title)
