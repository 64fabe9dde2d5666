"""What a fine-tune reports after each evaluation and what it returns and stores: the shape of a
phase's and a whole fine-tune's result (``ssmix.finetune`` fills them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class EvalReport:
    """What the callback receives after every evaluation."""

    phase: str
    global_step: int                  # steps over both phases (phase 2 continues phase 1's count)
    phase_step: int
    epoch: float
    accuracy: dict[str, float]        # per evaluation split
    selection: float                  # mean accuracy over the task's selection splits
    train_loss: float
    examples_per_sec: float
    is_best: bool
    checkpoint_dir: str


@dataclass
class PhaseResult:
    phase: str
    method: str
    best_selection: float
    best_accuracy: dict[str, float]
    best_step: int
    steps: int
    history: list[dict] = field(default_factory=list)
    # Tasks reported per round (``TaskSpec.selected_by``, ANLI): each split at its own round's best
    # checkpoint of this phase, and that round's selecting accuracy there.
    round_best_accuracy: dict[str, float] = field(default_factory=dict)
    round_best_selection: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0        # in optimiser steps, over every attempt
    eval_seconds: float = 0.0
    resumed_at: list[int] = field(default_factory=list)   # steps this phase was resumed from


@dataclass
class FinetuneResult:
    config: dict
    phase1: PhaseResult | None
    phase2: PhaseResult | None
    best_selection: float             # the paper's figure: best over both phases
    best_accuracy: dict[str, float]
    best_phase: str
    # Per round (ANLI): each split at its round's best checkpoint over both phases.
    round_best_accuracy: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)
