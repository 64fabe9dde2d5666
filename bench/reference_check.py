"""`protocol: reference` against the authors' code itself, row by row.

    python bench/reference_check.py --reference PATH/TO/clovaai-ssmix --data-dir ../shared/data

PATH is a checkout of https://github.com/clovaai/ssmix (not part of this project; its
``augmentation`` package is imported from there, nothing of it is copied). For each task and
method, the same training batches (each side tokenising as it does: the reference pads every
pair to 128 with ``longest_first`` truncation) go through the reference's ``Augment`` and through
our step's ``plan_mix``, with the same MiniLM weights on both sides and dropout off. Our random
draws are recorded and handed to the reference's ``random.randrange`` / ``random.sample`` calls in
the order the reference makes them, so both sides draw alike. A row is identical when the mixed
``input_ids`` and token types agree over the attended positions, the attended lengths agree and
λ agrees (to 1e-6). Prints a table per protocol and the first differing rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ssmix import mixing  # noqa: E402
from ssmix.methods import get_method  # noqa: E402
from ssmix.models import resolve_model_path  # noqa: E402
from ssmix.segments import content_mask, find_segments  # noqa: E402
from ssmix.splits import load_checked  # noqa: E402
from ssmix.step import MixupSettings, partner_rows, plan_mix, segment_saliency  # noqa: E402
from ssmix.tasks import get_task  # noqa: E402

METHODS = ("ssmix", "ssmix-nosal", "ssmix-nosal-nospan")
MAX_LEN = 128                       # the reference's Augment.max_len; pairs are cut at half of it


class ReferenceModel(torch.nn.Module):
    """What the reference's get_saliency calls: ``model.module.bert(inputs=..., trace_grad=True)``
    returning the logits first and the (detached, grad-requiring) embedding output last."""

    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier
        self.module = SimpleNamespace(bert=self.forward_traced)

    def forward_traced(self, inputs, trace_grad=False):
        kept = {}

        def hook(module, args, output):
            kept["embedding"] = output.detach().requires_grad_(True)
            return kept["embedding"]

        handle = self.classifier.base_model.embeddings.register_forward_hook(hook)
        try:
            logits = self.classifier(**{k: v for k, v in inputs.items() if v is not None}).logits
        finally:
            handle.remove()
        return logits, kept["embedding"]


class Draws:
    """Stands in for the reference module's ``random``: each call returns the draw our mixer made
    for the same (direction, segment, row), in the order the reference makes its calls."""

    def __init__(self):
        self.queue: list = []

    def randrange(self, start, stop):
        expected_stop, value = self.queue.pop(0)
        assert start == 0 and stop == expected_stop, (stop, expected_stop)
        return value

    def sample(self, population, k):
        expected, value = self.queue.pop(0)
        assert list(population) == expected and len(value) == k, (list(population), expected, k)
        return value


def texts(rows, task):
    return [[r[field] for r in rows] for field in task.text_fields]


def reference_inputs(tokenizer, rows, task):
    out = tokenizer(*texts(rows, task), padding="max_length", max_length=MAX_LEN, truncation=True,
                    return_tensors="pt")
    return {k: out[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


def our_inputs(tokenizer, rows, task):
    out = tokenizer(*texts(rows, task), padding="longest", max_length=MAX_LEN, truncation=True,
                    return_special_tokens_mask=True, return_tensors="pt")
    return dict(out)


def segment_lengths(ref_inputs, half, pairs):
    """Each side's ``[CLS] segment [SEP]`` lengths, per segment, as the reference's split_pairs
    computes them (one segment, the whole input, for single texts)."""
    length = ref_inputs["attention_mask"].sum(1)
    if not pairs:
        return (length[:half],), (length[half:],)
    right = ref_inputs["token_type_ids"].sum(1) + 1
    left = length - right + 1
    return (left[:half], right[:half]), (left[half:], right[half:])


def queue_draws(method, u, ours_a, ref_lengths, half, ratio_percent=10):
    """Our draws in the order the reference will ask for them: directions (A <- B, then B <- A),
    then segments (left, right), then rows, skipping the rows where the reference draws nothing."""
    a_lengths, b_lengths = ref_lengths
    S = len(a_lengths)
    max_len = MAX_LEN // 2 if S == 2 else MAX_LEN
    segments = find_segments(content_mask(ours_a), S)
    queue = []
    for direction in (0, 1):
        for s in range(S):
            length1, length2 = (a_lengths[s], b_lengths[s]) if direction == 0 else (b_lengths[s], a_lengths[s])
            for i in range(half):
                r = direction * half + i
                l1, l2 = min(int(length1[i]), max_len), int(length2[i])
                window = int((l1 - 2) * ratio_percent / 100.) or 1
                if method == "ssmix-nosal":
                    if l2 <= window:
                        continue
                    stop = l1 - window
                    queue.append((stop, min(int(u[0, s, r] * stop), stop - 1)))
                else:   # nospan: the positions our ranks chose, in the reference's split coordinates
                    mix_len = window if l2 - 2 >= window else l2 - 2
                    top = min(l1 - 1, l2 - 1)
                    start = int(segments.starts[s, r])
                    scores = u[s, r, start:start + top - 1]
                    chosen = torch.argsort(scores)[:mix_len].tolist()
                    queue.append((list(range(1, top)), [c + 1 for c in chosen]))
    return queue


def compare(task_name, method, protocol, model, tokenizer, rows, batches, batch_size, reference_dir):
    import augmentation.ssmix as reference_ssmix
    from augmentation import Augment  # the reference's package (on sys.path)

    task = get_task(task_name)
    pairs = len(task.text_fields) == 2
    reference = ReferenceModel(model)
    args = SimpleNamespace(aug_mode="ssmix", nli_dataset=pairs, ss_winsize=10, ss_no_saliency=method != "ssmix",
                           ss_no_span=method == "ssmix-nosal-nospan", device="cpu", model=reference,
                           optimizer=SimpleNamespace(zero_grad=lambda: model.zero_grad(set_to_none=True)),
                           criterion=torch.nn.CrossEntropyLoss(reduction="none"))
    augment = Augment(args)
    draws = Draws()
    reference_ssmix.random = draws
    reference_settings = dict(cap_span_by_b=False, nosal_start="shared", segment_max_tokens=64,
                              pair_saliency="per_segment")
    settings = MixupSettings(mix_ratio=0.1, pad_token_id=tokenizer.pad_token_id, num_segments=len(task.text_fields),
                             **(reference_settings if protocol == "reference" else {}))
    recorded = {}
    original_uniform = mixing._uniform

    def record_uniform(shape, like, generator):
        recorded["u"] = original_uniform(shape, like, generator)
        return recorded["u"]

    mixing._uniform = record_uniform
    identical, differing = 0, []
    try:
        for number in range(batches):
            chunk = rows[number * batch_size:(number + 1) * batch_size]
            half = len(chunk) // 2
            labels = torch.tensor([r[task.label_field] for r in chunk])
            ours = our_inputs(tokenizer, chunk, task)
            partner = partner_rows(half)
            if method == "ssmix":
                per_segment = settings.pair_saliency == "per_segment" and pairs
                saliency = (segment_saliency(model, ours, labels, tokenizer.pad_token_id, 2)
                            if per_segment else whole_saliency(model, ours, labels))
            else:
                saliency = None
            plan = plan_mix(get_method(method), model, ours, partner, settings,
                            torch.Generator().manual_seed(number), saliency, labels)
            ref_in = reference_inputs(tokenizer, chunk, task)
            if method != "ssmix":
                draws.queue = queue_draws(method, recorded["u"], plan.sides.a,
                                          segment_lengths(ref_in, half, pairs), half)
            inputs_left = {k: v[:half].clone() for k, v in ref_in.items()}
            inputs_right = {k: v[half:].clone() for k, v in ref_in.items()}
            lengths = ref_in["attention_mask"].sum(1)
            mixed1, ratio1, mixed2, ratio2 = augment(inputs_left, labels[:half], lengths[:half].clone(),
                                                     inputs_right, labels[half:], lengths[half:].clone())
            assert not draws.queue, "the reference drew fewer times than expected"
            ref_ids = torch.cat([mixed1["input_ids"], mixed2["input_ids"]])
            ref_types = torch.cat([mixed1["token_type_ids"], mixed2["token_type_ids"]])
            ref_mask = torch.cat([mixed1["attention_mask"], mixed2["attention_mask"]])
            ref_ratio = torch.cat([ratio1, ratio2])
            for r in range(2 * half):
                n_ref, n_ours = int(ref_mask[r].sum()), int(plan.inputs["attention_mask"][r].sum())
                same = (n_ref == n_ours
                        and ref_ids[r, :n_ref].tolist() == plan.inputs["input_ids"][r, :n_ours].tolist()
                        and ref_types[r, :n_ref].tolist() == plan.inputs["token_type_ids"][r, :n_ours].tolist()
                        and abs(float(ref_ratio[r]) - (1 - float(plan.lam[r]))) < 1e-6)
                if same:
                    identical += 1
                else:
                    differing.append({"batch": number, "row": r, "ref_len": n_ref, "our_len": n_ours,
                                      "ref_lambda": round(1 - float(ref_ratio[r]), 6),
                                      "our_lambda": round(float(plan.lam[r]), 6),
                                      "ref": tokenizer.decode(ref_ids[r, :n_ref]),
                                      "ours": tokenizer.decode(plan.inputs["input_ids"][r, :n_ours])})
    finally:
        mixing._uniform = original_uniform
    return identical, identical + len(differing), differing


def whole_saliency(model, batch, labels):
    import torch.nn.functional as F

    from ssmix.encoder import capture_embeddings, model_inputs

    with capture_embeddings(model) as captured:
        loss = F.cross_entropy(model(**model_inputs(batch)).logits, labels)
    (grad,) = torch.autograd.grad(loss, captured.output)
    from ssmix.encoder import saliency_from_gradient

    return saliency_from_gradient(grad, batch["special_tokens_mask"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, help="a checkout of github.com/clovaai/ssmix")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--tasks", nargs="+", default=["rte", "mrpc"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--protocols", nargs="+", default=["reference", "ours"])
    parser.add_argument("--batches", type=int, default=13, help="batches per task (32 rows each)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--show", type=int, default=3, help="differing rows to print per case")
    parser.add_argument("--json", help="write every count and differing row here")
    args = parser.parse_args(argv)
    reference_dir = Path(args.reference).resolve()
    if not (reference_dir / "augmentation" / "ssmix.py").exists():
        parser.error(f"--reference {reference_dir}: no augmentation/ssmix.py there (a clovaai/ssmix checkout?)")
    sys.path.insert(0, str(reference_dir))

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = resolve_model_path("minilm")
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=6, hidden_dropout_prob=0.0,
                                                               attention_probs_dropout_prob=0.0)
    model.train()          # as in training (and as the reference's saliency sets it); dropout is off
    report = {}
    print("| protocol | task | method | identical rows | % |\n|---|---|---|---:|---:|")
    for protocol in args.protocols:
        for task_name in args.tasks:
            task = get_task(task_name)
            rows = load_checked(task, task.train_splits[0], Path(args.data_dir)).to_list()
            for method in args.methods:
                same, total, differing = compare(task_name, method, protocol, model, tokenizer, rows,
                                                 args.batches, args.batch_size, reference_dir)
                report[f"{protocol} {task_name} {method}"] = {"identical": same, "rows": total,
                                                              "differing": differing}
                print(f"| {protocol} | {task_name} | {method} | {same} / {total} | {100 * same / total:.1f} |",
                      flush=True)
    for key, value in report.items():
        for row in value["differing"][:args.show]:
            print(f"\n{key}: batch {row['batch']} row {row['row']}: λ ref {row['ref_lambda']} ours "
                  f"{row['our_lambda']}, length ref {row['ref_len']} ours {row['our_len']}\n"
                  f"  ref:  {row['ref']}\n  ours: {row['ours']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
