"""The task table (docs/method.md §3): tasks are data, not ``if task == ...`` chains."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class TaskSpec(BaseModel):
    """Where a task's data come from and how to read it.

    hub_path/hub_name:  ``datasets.load_dataset(hub_path, hub_name)``
    local_name:         folder under a local data directory: ``<dir>/<local_name>/<split>.jsonl``
    text_fields:        one field (single sentence) or two (a pair)
    train_splits:       concatenated for training (ANLI: rounds 1-3)
    eval_splits:        evaluated at every evaluation
    selection_splits:   the mean accuracy over these selects the best checkpoint (never a test
                        split where a dev split exists: docs/method.md §6)
    selected_by:        reported split -> the split whose own best checkpoint it is read at
                        (ANLI: each round's dev and test at that round's best dev checkpoint,
                        as the paper reports them); None: every split at the selected checkpoint
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="the task's name, used in `tasks`")
    text_fields: tuple[str, ...] = Field(min_length=1, max_length=2, description="one field (single sentence) "
                                         "or two (a pair)")
    label_field: str = Field(default="label", description="the field holding the label")
    num_labels: int = Field(ge=2, description="number of classes")
    train_splits: tuple[str, ...] = Field(default=("train",), description="concatenated for training")
    eval_splits: tuple[str, ...] = Field(default=("validation",), description="evaluated at every evaluation")
    selection_splits: tuple[str, ...] | None = Field(default=None, description="their mean accuracy selects the "
                                                     "best checkpoint (none: eval_splits)")
    selected_by: dict[str, str] | None = Field(default=None, description="reported split -> the split whose own "
                                               "best checkpoint it is read at (ANLI's rounds)")
    hub_path: str | None = Field(default=None, description="datasets.load_dataset(hub_path, hub_name)")
    hub_name: str | None = Field(default=None, description="the hub dataset's configuration")
    local_name: str | None = Field(default=None, description="folder under data_dir: <dir>/<local_name>/<split>.jsonl")
    data_files: dict[str, str] | None = Field(default=None, description="split -> a CSV or JSONL file (your tasks)")
    label_map: dict[str, int] | None = Field(default=None, description="string label -> class id (your tasks)")
    # Size, for the sweep's schedule only (cost ∝ examples × tokens): training examples, and
    # mean WordPiece tokens per example with [CLS]/[SEP] (measured on ../shared/data's copies with
    # the uncased BERT vocabulary where we have them; MNLI and QQP: typical published figures).
    train_examples: int | None = Field(default=None, ge=1, description="training examples (the schedule's cost "
                                       "estimate only)")
    mean_tokens: float | None = Field(default=None, gt=0, description="mean tokens per example (the schedule's "
                                      "cost estimate only)")

    @field_validator("selection_splits")
    @classmethod
    def _selection_within_eval(cls, value, info):
        evals = info.data.get("eval_splits", ())
        if value is not None and not set(value) <= set(evals):
            raise ValueError(f"selection_splits {list(value)} must be among eval_splits {list(evals)}")
        return value

    @property
    def selection(self) -> tuple[str, ...]:
        return self.selection_splits or self.eval_splits


# CogComp/trec's fine labels in the order of its `fine_label` ClassLabel (the ids in the data).
TREC_FINE_LABELS = (
    "ABBR:abb", "ABBR:exp",
    "ENTY:animal", "ENTY:body", "ENTY:color", "ENTY:cremat", "ENTY:currency", "ENTY:dismed",
    "ENTY:event", "ENTY:food", "ENTY:instru", "ENTY:lang", "ENTY:letter", "ENTY:other",
    "ENTY:plant", "ENTY:product", "ENTY:religion", "ENTY:sport", "ENTY:substance",
    "ENTY:symbol", "ENTY:techmeth", "ENTY:termeq", "ENTY:veh", "ENTY:word",
    "DESC:def", "DESC:desc", "DESC:manner", "DESC:reason",
    "HUM:gr", "HUM:ind", "HUM:title", "HUM:desc",
    "LOC:city", "LOC:country", "LOC:mount", "LOC:other", "LOC:state",
    "NUM:code", "NUM:count", "NUM:date", "NUM:dist", "NUM:money", "NUM:ord", "NUM:other",
    "NUM:period", "NUM:perc", "NUM:speed", "NUM:temp", "NUM:volsize", "NUM:weight",
)


def merged_after_colon(names: tuple[str, ...]) -> dict[str, int]:
    """Label id -> class id when labels are merged by the part after the colon (the hub's old TREC
    loader, whose 47 fine classes the paper reports: ENTY:other, LOC:other and NUM:other become
    one class, DESC:desc and HUM:desc another), classes numbered in order of first appearance."""
    merged = list(dict.fromkeys(name.split(":", 1)[1] for name in names))
    return {str(i): merged.index(name.split(":", 1)[1]) for i, name in enumerate(names)}


def _glue(name, fields, size, tokens, labels=2, eval_split="validation", local=None):
    return TaskSpec(name=name, text_fields=fields, num_labels=labels, eval_splits=(eval_split,),
                    hub_path="nyu-mll/glue", hub_name=local or name, local_name=local or name,
                    train_examples=size, mean_tokens=tokens)


_ANLI_DEV = ("dev_r1", "dev_r2", "dev_r3")
_ANLI_TEST = ("test_r1", "test_r2", "test_r3")

TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    _glue("sst2", ("sentence",), 67_349, 13.2),
    _glue("qqp", ("question1", "question2"), 363_846, 30.0),
    _glue("mnli", ("premise", "hypothesis"), 392_702, 39.0, 3, "validation_mismatched"),
    _glue("mnli-matched", ("premise", "hypothesis"), 392_702, 39.0, 3, "validation_matched", local="mnli"),
    _glue("qnli", ("question", "sentence"), 104_743, 51.2),   # tokens: measured on validation
    _glue("rte", ("sentence1", "sentence2"), 2_490, 66.6),
    _glue("mrpc", ("sentence1", "sentence2"), 3_668, 53.4),
    TaskSpec(name="trec-coarse", text_fields=("text",), label_field="coarse_label", num_labels=6,
             eval_splits=("test",), hub_path="CogComp/trec", local_name="trec", train_examples=5_452, mean_tokens=13.5),
    TaskSpec(name="trec-fine", text_fields=("text",), label_field="fine_label", num_labels=50,
             eval_splits=("test",), hub_path="CogComp/trec", local_name="trec", train_examples=5_452, mean_tokens=13.5),
    TaskSpec(name="trec-fine-47", text_fields=("text",), label_field="fine_label", num_labels=47,
             label_map=merged_after_colon(TREC_FINE_LABELS), eval_splits=("test",), hub_path="CogComp/trec",
             local_name="trec", train_examples=5_452, mean_tokens=13.5),
    TaskSpec(name="anli", text_fields=("premise", "hypothesis"), num_labels=3,
             train_splits=("train_r1", "train_r2", "train_r3"), eval_splits=_ANLI_DEV + _ANLI_TEST,
             selection_splits=_ANLI_DEV, hub_path="facebook/anli", local_name="anli",
             selected_by={split: f"dev_{split[-2:]}" for split in _ANLI_DEV + _ANLI_TEST},
             train_examples=162_865, mean_tokens=84.0),   # tokens: measured on dev_r3
)}


def get_task(name: str | TaskSpec) -> TaskSpec:
    if isinstance(name, TaskSpec):
        return name
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None


def describe_tasks() -> str:
    rows = [f"{'task':<14} {'labels':>6}  {'text fields':<24} {'label':<13} {'source':<22} eval splits"]
    for t in TASKS.values():
        source = t.hub_path + (f"/{t.hub_name}" if t.hub_name else "")
        rows.append(f"{t.name:<14} {t.num_labels:>6}  {', '.join(t.text_fields):<24} {t.label_field:<13} "
                    f"{source:<22} {', '.join(t.eval_splits)}")
    return "\n".join(rows)
