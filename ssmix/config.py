"""The one trial config: every setting of a trial and its default, written once.

``TrialSettings`` holds what a sweep file's ``trial:`` block may set; ``TrialConfig`` adds the
axes a sweep varies (task, method, mix ratio, seed) and where the model and data come from. The
command line's flags (``ssmix train``) are generated from these classes (``add_config_arguments``),
so a new setting is one new field here, with its default and its help. Defaults are the paper's
recipe (docs/method.md §2). Imports no torch: a sweep file is validated without the training stack.
"""

from __future__ import annotations

import argparse
import types
import typing
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ssmix.methods import METHODS, MIXUP_SETTINGS
from ssmix.tasks import TASKS, TaskSpec

# Seeds reach numpy's and torch's generators, which take 0 .. 2**32 - 1 (numpy's legacy API) and
# fail deep inside a trial otherwise: checked where a seed is read.
Seed = Annotated[int, Field(ge=0, lt=2**32)]
# A 1-based encoder layer.
Layer = Annotated[int, Field(ge=1)]


class PhaseConfig(BaseModel):
    """One phase of the two-phase fine-tune. The two phases are two values of this class."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(ge=1, description="training epochs")
    lr: float = Field(gt=0, description="peak learning rate (AdamW, linear warm-up and decay)")
    warmup_ratio: float = Field(default=0.1, ge=0, le=1, description="share of the steps spent warming up")
    weight_decay: float = Field(default=1e-4, ge=0, description="AdamW weight decay (not on biases and LayerNorm)")
    adam_eps: float = Field(default=1e-8, gt=0, description="AdamW epsilon")
    max_steps: int | None = Field(default=None, ge=1, description="cap on optimiser steps (short runs)")


# The only place the phases' own defaults are written (docs/method.md §2: 3 epochs at 5e-5, then 5 at 1e-5).
PHASE_DEFAULTS: dict[str, dict[str, Any]] = {"phase1": {"epochs": 3, "lr": 5e-5},
                                             "phase2": {"epochs": 5, "lr": 1e-5}}


def _phase_field(phase: str, what: str):
    return Field(default_factory=lambda: PhaseConfig(**PHASE_DEFAULTS[phase]), description=what)


class TrialSettings(BaseModel):
    """The settings a sweep file's ``trial:`` block may override, each alone: what is not given
    keeps its default (in a phase too: ``phase1: {epochs: 1}`` keeps phase 1's learning rate)."""

    model_config = ConfigDict(extra="forbid")

    phase1: PhaseConfig = _phase_field("phase1", "phase 1: plain fine-tuning, its best checkpoint starts phase 2")
    phase2: PhaseConfig = _phase_field("phase2", "phase 2: fine-tuning with the method")
    batch_size: int = Field(default=32, ge=2, description="training batch (split into halves A and B to mix)")
    eval_batch_size: int = Field(default=128, ge=1, description="evaluation batch")
    max_length: int = Field(default=128, ge=8, description="truncate inputs to this many tokens")
    pad_to: int | None = Field(default=None, ge=8, description="pad every batch to this length (the reference "
                               "code: 128); none pads each batch to its longest example")
    eval_every: int = Field(default=500, ge=1, description="evaluate every this many steps (at least once an epoch)")
    train_fraction: float = Field(default=1.0, gt=0, le=1, description="train on this random share of train "
                                  "(0.75 reproduces the reference code)")
    max_train_examples: int | None = Field(default=None, ge=2, description="cap on training examples (short runs)")
    max_eval_examples: int | None = Field(default=None, ge=1, description="cap on examples per evaluation split")
    selection: Literal["eval", "dev-split"] = Field(default="eval", description="select the best checkpoint "
                                                    "on the task's selection splits (eval), or on a held-out "
                                                    "part of train (dev-split: for tasks whose only evaluation "
                                                    "split is the reported one, e.g. TREC)")
    dev_fraction: float = Field(default=0.1, gt=0, lt=1, description="share of train held out with "
                                "selection dev-split")
    hidden_alpha: float = Field(default=0.2, gt=0, description="α of λ' ~ Beta(α, α) for embedmix and tmix")
    tmix_layers: tuple[Layer, ...] | None = Field(default=None, description="1-based layers TMix mixes after; "
                                                "none = {7, 9, 12} scaled to the model's depth")
    saliency: Literal["free", "separate"] = Field(default="free", description="SSMix saliency from the clean "
                                                  "loss's backward (free) or the reference code's extra passes")
    device: str = Field(default="auto", description="cuda, cpu, or auto (cuda when available)")
    bf16: bool = Field(default=False, description="bf16 autocast on CUDA")
    # Where the authors' reference code differs from the paper's text and from our defaults
    # (docs/protocols.md). `protocol: reference` sets them all its way.
    clip: float | None = Field(default=1.0, gt=0, description="clip the gradient norm at this after backward; "
                               "none = never (the reference code clips before backward, so never in effect)")
    segment_max_tokens: int | None = Field(default=None, ge=3, description="cut each text of a pair, in "
                                           "the copy that is mixed, to this many tokens counting its [CLS] and "
                                           "[SEP] (the reference code: 64); the clean loss, evaluation and the "
                                           "partner's saliency see the whole pair; none = no cut")
    pair_saliency: Literal["whole", "per_segment"] = Field(default="whole", description="SSMix saliency of a "
                                                           "pair: from the whole pair, or each segment run "
                                                           "alone through the model (the reference code)")
    nosal_start: Literal["independent", "shared"] = Field(default="independent", description="SSMix - saliency: "
                                                          "draw A's and B's span starts independently, or one "
                                                          "start for both (the reference code)")
    cap_span_by_b: bool = Field(default=True, description="cap the span at B's length (else, as the reference "
                                "code, B's window may run over its [SEP] and padding)")
    tie: Literal["first", "last"] = Field(default="first", description="which of equally salient windows wins "
                                          "(the reference code's argmax and argmin: the first)")
    protocol: Literal["ours", "reference"] = Field(default="ours", description="reference: every setting above "
                                                   "that is left at its default takes the reference code's "
                                                   "value (and train_fraction 0.75)")

    @model_validator(mode="before")
    @classmethod
    def _protocol_preset(cls, values):
        """`protocol: reference` gives each protocol setting not given the reference code's value."""
        if isinstance(values, dict) and values.get("protocol") == "reference":
            values = {**REFERENCE_PROTOCOL, **{k: v for k, v in values.items() if k not in REFERENCE_PROTOCOL
                                                or v != _FIELD_DEFAULTS.get(k)}}
        return values

    @field_validator("phase1", "phase2", mode="before")
    @classmethod
    def _phase_over_its_defaults(cls, value, info):
        if isinstance(value, dict):   # a partial phase from YAML or JSON keeps the phase's own defaults
            return {**PHASE_DEFAULTS[info.field_name], **value}
        return value


class TrialConfig(TrialSettings):
    """Everything that determines one fine-tune's result."""

    task: str | TaskSpec = Field(description="a task of `ssmix tasks`, or a custom task's spec")
    model: str = Field(default="minilm", description="HF model name or path; 'minilm' = the offline "
                       "all-MiniLM-L6-v2")
    method: str = Field(default="ssmix", description=f"one of {', '.join(METHODS)}")
    mix_ratio: float = Field(default=0.1, gt=0, le=1, description="λ0, the share of tokens the input-level "
                             "methods replace")
    seed: Seed = Field(default=0, description="seeds the model head, data order and mixing")
    data_dir: str | None = Field(default=None, description="local data <dir>/<dataset>/<split>.jsonl; "
                                 "none = $SSMIX_DATA_DIR, else the hub")

    @field_validator("task", mode="before")
    @classmethod
    def _known_task(cls, value):
        if isinstance(value, dict):   # a custom task declared in config (from JSON or YAML)
            return TaskSpec(**value)
        if isinstance(value, str) and value not in TASKS:
            raise ValueError(f"unknown task {value!r}; known tasks: {', '.join(TASKS)}")
        return value

    @field_validator("method")
    @classmethod
    def _known_method(cls, value):
        if value not in METHODS:
            raise ValueError(f"unknown method {value!r}; known methods: {', '.join(METHODS)}")
        return value

    @property
    def task_name(self) -> str:
        return self.task if isinstance(self.task, str) else self.task.name


# The reference code's protocol (clovaai/ssmix; docs/protocols.md).
REFERENCE_PROTOCOL = {"clip": None, "train_fraction": 0.75, "segment_max_tokens": 64,
                      "pair_saliency": "per_segment", "nosal_start": "shared", "cap_span_by_b": False}
_FIELD_DEFAULTS = {name: TrialSettings.model_fields[name].get_default() for name in REFERENCE_PROTOCOL}

# Settings that change phase 2 and never phase 1: a phase-1 cell's id leaves them out, so one
# phase 1 is shared by every method. Every other setting is part of both ids.
PHASE2_ONLY = ("method", "phase2", *MIXUP_SETTINGS)
# Where a trial runs, not what it computes: in no cell id.
PLACEMENT = ("device",)


def default(name: str):
    """A TrialConfig field's default (the sweep file's axes take theirs from here)."""
    return TrialConfig.model_fields[name].get_default(call_default_factory=True)


# ------------------------------------------------------------------------- the command line


def _flag_type(annotation) -> tuple[Any, dict]:
    """argparse type and extra keywords for a field's annotation (X | None is X, optional)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _flag_type(args[0])
    if typing.get_origin(annotation) is Literal:
        return str, {"choices": list(typing.get_args(annotation))}
    if typing.get_origin(annotation) is tuple:
        return typing.get_args(annotation)[0], {"nargs": "+"}
    return annotation, {}


def _or_none(kind):
    def parse(text: str):
        return None if text.lower() == "none" else kind(text)
    parse.__name__ = kind.__name__     # argparse names the type in its error messages
    return parse


def _add_flag(parser: argparse.ArgumentParser, flag: str, dest: str, annotation, default_value, description) -> None:
    if annotation is bool:
        parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=default_value,
                            help=f"{description} (default: {'on' if default_value else 'off'})")
        return
    shown = "none" if default_value is None else default_value
    if isinstance(shown, tuple):
        shown = " ".join(map(str, shown))
    kind, extra = _flag_type(annotation)
    if kind not in (int, float, str):
        kind = str
    if type(None) in typing.get_args(annotation) and "choices" not in extra:
        kind = _or_none(kind)          # an optional setting takes "none" too (e.g. --clip none)
    parser.add_argument(flag, dest=dest, type=kind, default=default_value,
                        help=f"{description} (default: {shown})", **extra)


def add_config_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One flag per TrialConfig field, phases as ``--phase1-lr`` etc., each with help and default."""
    for name, field in TrialConfig.model_fields.items():
        if name in skip:
            continue
        if name in ("phase1", "phase2"):
            phase_defaults = PhaseConfig(**PHASE_DEFAULTS[name])
            for key, inner in PhaseConfig.model_fields.items():
                _add_flag(parser, f"--{name}-{key.replace('_', '-')}", f"{name}__{key}", inner.annotation,
                          getattr(phase_defaults, key), f"{name}: {inner.description}")
            continue
        _add_flag(parser, f"--{name.replace('_', '-')}", name, field.annotation,
                  field.get_default(call_default_factory=True), field.description)


def config_from_arguments(args: argparse.Namespace, **fixed) -> TrialConfig:
    """The TrialConfig that ``add_config_arguments``'s flags describe (``fixed`` wins)."""
    values: dict[str, Any] = {"phase1": {}, "phase2": {}}
    for name, value in vars(args).items():
        phase, _, key = name.partition("__")
        if key and phase in values:
            values[phase][key] = value
        elif name in TrialConfig.model_fields:
            values[name] = tuple(value) if isinstance(value, list) else value
    try:
        return TrialConfig(**{**values, **fixed})
    except ValidationError as err:
        problems = [f"{flag_for(e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in err.errors()]
        raise ValueError("; ".join(problems)) from None


def flag_for(location: tuple) -> str:
    """The command-line flag of a validation error's location: ("phase1", "lr") is --phase1-lr."""
    names = [str(part) for part in location if not isinstance(part, int)]
    return "--" + "-".join(n.replace("_", "-") for n in names) if names else "config"
