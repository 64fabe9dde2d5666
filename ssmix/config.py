"""The typed trial config: one value flows from a sweep YAML (or the command line) to the
fine-tune. Every default is the paper's recipe (SPEC section 2)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ssmix.methods import METHODS
from ssmix.tasks import TASKS, TaskSpec


class PhaseConfig(BaseModel):
    """One phase of the two-phase fine-tune. The two phases are two values of this class."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(ge=1)
    lr: float = Field(gt=0)
    warmup_ratio: float = Field(default=0.1, ge=0, le=1)
    weight_decay: float = Field(default=1e-4, ge=0)
    adam_eps: float = Field(default=1e-8, gt=0)
    max_steps: int | None = Field(default=None, ge=1, description="cap on optimiser steps (short runs)")


def default_phase1() -> PhaseConfig:
    return PhaseConfig(epochs=3, lr=5e-5)


def default_phase2() -> PhaseConfig:
    return PhaseConfig(epochs=5, lr=1e-5)


class TrialConfig(BaseModel):
    """Everything that determines one fine-tune's result."""

    model_config = ConfigDict(extra="forbid")

    task: str | TaskSpec
    model: str = "minilm"
    method: str = "ssmix"
    mix_ratio: float = Field(default=0.1, gt=0, le=1)
    seed: int = 0
    phase1: PhaseConfig = Field(default_factory=default_phase1)
    phase2: PhaseConfig = Field(default_factory=default_phase2)
    batch_size: int = Field(default=32, ge=2)
    eval_batch_size: int = Field(default=128, ge=1)
    max_length: int = Field(default=128, ge=8)
    pad_to: int | None = Field(default=None, description="pad every batch to this length (the reference code: 128)")
    eval_every: int = Field(default=500, ge=1)
    train_fraction: float = Field(default=1.0, gt=0, le=1)
    max_train_examples: int | None = Field(default=None, ge=2)
    max_eval_examples: int | None = Field(default=None, ge=1)
    data_dir: str | None = None
    hidden_alpha: float = Field(default=0.2, gt=0)
    tmix_layers: tuple[int, ...] | None = None
    saliency: Literal["free", "separate"] = "free"
    device: str = "auto"
    bf16: bool = False

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
