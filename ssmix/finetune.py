"""The two-phase fine-tune of docs/method.md §2, readable top to bottom.

Phase 1 trains without mixup and keeps its best checkpoint; phase 2 starts from it and trains
with the chosen method. Each phase evaluates every ``eval_every`` steps (or every epoch when an
epoch is shorter), reports through a callback, and writes a checkpoint that holds everything
needed to continue bit for bit: model, optimiser, scheduler, step, RNG states and the position
in the shuffled data.

Output directory::

    <out>/phase1/best/      the best phase-1 weights (a HuggingFace model directory)
    <out>/phase1/state.pt   the latest mid-phase checkpoint
    <out>/phase1/result.json, <out>/phase2/...
    <out>/summary.json
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from transformers import AutoTokenizer, get_linear_schedule_with_warmup

from ssmix.config import PhaseConfig, TrialConfig
from ssmix.data import TaskData, load_task_data, rows_at
from ssmix.device import resolve_device
from ssmix.files import atomic_write, write_json
from ssmix.models import load_classifier, resolve_model_path
from ssmix.outcome import EvalReport, FinetuneResult, PhaseResult
from ssmix.step import MixupSettings, OnMix, train_step
from ssmix.tasks import get_task

PHASES = ("phase1", "phase2")


# -------------------------------------------------------------------------------- helpers


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def phase_seed(seed: int, phase: str, epoch: int) -> int:
    return (seed * 1_000_003 + PHASES.index(phase) * 10_007 + epoch) % (2**62)


def make_optimizer(model: torch.nn.Module, phase: PhaseConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and LayerNorm weights."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name else decay).append(param)
    return torch.optim.AdamW([{"params": decay, "weight_decay": phase.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=phase.lr, eps=phase.adam_eps)


def evaluate(model, data: TaskData, batch_size: int, device: torch.device,
             autocast_dtype: torch.dtype | None) -> dict[str, float]:
    model.eval()
    accuracy = {}
    with torch.no_grad():
        for split, ds in data.evals.items():
            correct = 0
            for start in range(0, len(ds), batch_size):
                batch, labels = data.collator(rows_at(ds, range(start, min(start + batch_size, len(ds)))))
                batch = {k: v.to(device) for k, v in batch.items() if k != "special_tokens_mask"}
                with torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext():
                    logits = model(**batch).logits
                correct += (logits.argmax(-1).cpu() == labels).sum().item()
            accuracy[split] = correct / len(ds)
    model.train()
    return accuracy


def _rng_state(generator: torch.Generator, host_generator: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "mix": generator.get_state(),
             "numpy": np.random.get_state(), "python": random.getstate()}
    if host_generator is not generator:
        state["host"] = host_generator.get_state()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, generator: torch.Generator, host_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["mix"])
    if "host" in state:
        host_generator.set_state(state["host"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -------------------------------------------------------------------------------- the phase


@dataclass
class Trainer:
    """What trains one phase: the model and its optimiser, scheduler and mixing generators, and
    the phase's step counts. Built the same way on a fresh start and on a resume."""

    phase: str
    method: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    generator: torch.Generator             # on the device: the mixers' draws
    host_generator: torch.Generator        # on the CPU: λ' and TMix's layer (the generator itself on CPU)
    settings: MixupSettings
    steps_per_epoch: int
    total_steps: int
    eval_interval: int
    autocast_dtype: torch.dtype | None


def mixup_settings(config: TrialConfig, tokenizer, task) -> MixupSettings:
    """A trial's mixup settings (every field the trial config shares with ``MixupSettings``), with
    what the step needs to know of the tokenizer and the task."""
    from_trial = {f.name: getattr(config, f.name) for f in fields(MixupSettings) if f.name in TrialConfig.model_fields}
    return MixupSettings(**from_trial, unk_token_id=tokenizer.unk_token_id, pad_token_id=tokenizer.pad_token_id or 0,
                         num_segments=len(task.text_fields))


def make_trainer(phase: str, config: TrialConfig, data: TaskData, model_dir: str, device: torch.device,
                 settings: MixupSettings) -> Trainer:
    phase_config: PhaseConfig = getattr(config, phase)
    seed_everything(config.seed + PHASES.index(phase))
    model = load_classifier(model_dir, data.task.num_labels).to(device)
    model.train()
    optimizer = make_optimizer(model, phase_config)
    steps_per_epoch = math.ceil(len(data.train) / config.batch_size)
    total_steps = phase_config.epochs * steps_per_epoch
    if phase_config.max_steps is not None:
        total_steps = min(total_steps, phase_config.max_steps)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(phase_config.warmup_ratio * total_steps), total_steps)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    host_generator = generator if device.type == "cpu" else torch.Generator().manual_seed(config.seed)
    return Trainer(phase=phase, method="none" if phase == "phase1" else config.method, model=model,
                   optimizer=optimizer, scheduler=scheduler, generator=generator, host_generator=host_generator,
                   settings=settings,
                   steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                   eval_interval=min(config.eval_every, steps_per_epoch),
                   autocast_dtype=torch.bfloat16 if config.bf16 and device.type == "cuda" else None)


@dataclass
class ResumeState:
    """Where a phase is and what it has seen. Saved with the weights, optimiser, scheduler and RNG
    states at every evaluation and restored from the same fields, so a resumed phase continues bit
    for bit."""

    step: int = 0
    epoch: int = 0
    position: int = 0                 # in the epoch's shuffled order
    best: dict = field(default_factory=lambda: {"selection": -1.0, "accuracy": {}, "step": 0})
    rounds: dict = field(default_factory=dict)    # selecting split -> {"selection", "accuracy"} at its best
    history: list = field(default_factory=list)
    timing: dict = field(default_factory=lambda: {"train": 0.0, "eval": 0.0})
    resumed_at: list = field(default_factory=list)

    def save(self, path: Path, trainer: Trainer, resume_at: tuple[int, int]) -> None:
        """``resume_at``: the (epoch, position) to continue from (the next epoch's start at an
        epoch's end)."""
        fields = {**asdict(self), "epoch": resume_at[0], "position": resume_at[1]}
        atomic_write(path, lambda tmp: torch.save({
            "model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict(),
            "rng": _rng_state(trainer.generator, trainer.host_generator), "state": fields}, tmp))

    @classmethod
    def load(cls, path: Path, trainer: Trainer, device: torch.device) -> "ResumeState":
        saved = torch.load(path, map_location=device, weights_only=False)
        trainer.model.load_state_dict(saved["model"])
        trainer.optimizer.load_state_dict(saved["optimizer"])
        trainer.scheduler.load_state_dict(saved["scheduler"])
        _set_rng_state(saved["rng"], trainer.generator, trainer.host_generator)
        state = cls(**saved["state"])
        state.resumed_at = state.resumed_at + [state.step]
        return state


@dataclass
class _Window:
    """The training steps since the last evaluation: their losses (0-dim tensors on the device,
    read at the evaluation, so that a step never waits for the device) and throughput."""

    losses: list = field(default_factory=list)
    examples: int = 0
    seconds: float = 0.0
    first_step: int = 1

    def mean_loss(self, phase: str, method: str, lr: float) -> float:
        """The window's mean training loss; a non-finite loss fails the phase, naming its step."""
        losses = torch.stack(self.losses).double().cpu().numpy()
        finite = np.isfinite(losses)
        if not finite.all():
            bad = int(np.argmin(finite))
            raise FloatingPointError(f"{phase}: training loss is {losses[bad]} at step {self.first_step + bad} "
                                     f"(method {method}, lr {lr})")
        return float(np.mean(losses))


def run_phase(phase: str, config: TrialConfig, data: TaskData, model_dir: str, out_dir: Path,
              device: torch.device, settings: MixupSettings, step_offset: int = 0,
              callback: Callable[[EvalReport], None] | None = None,
              on_step: Callable[[str, int, int], None] | None = None, save_best: bool = True,
              on_mix: OnMix | None = None) -> PhaseResult:
    """Train one phase from ``model_dir``'s weights, resuming from ``out_dir/state.pt`` if there.
    ``save_best``: keep the best weights (model only, no optimizer) in ``out_dir/best``.
    ``on_mix``: shown the mixes of the phase's first step (``ssmix.step.OnMix``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    done = out_dir / "result.json"
    if done.exists():
        return PhaseResult(**json.loads(done.read_text()))
    trainer = make_trainer(phase, config, data, model_dir, device, settings)
    state_path = out_dir / "state.pt"
    state = ResumeState.load(state_path, trainer, device) if state_path.exists() else ResumeState()
    window = _Window(first_step=state.step + 1)
    while state.step < trainer.total_steps:
        order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(
            phase_seed(config.seed, phase, state.epoch))).tolist()
        while state.position < len(order) and state.step < trainer.total_steps:
            _train_one(trainer, state, window, config, data, order, device, on_mix if state.step == 0 else None)
            if on_step is not None:
                on_step(phase, state.step, trainer.total_steps)
            if state.step % trainer.eval_interval == 0 or state.step == trainer.total_steps:
                # At the end of an epoch the checkpoint points at the start of the next one.
                resume_at = (state.epoch + 1, 0) if state.position >= len(order) else (state.epoch, state.position)
                report = _evaluate(trainer, state, window, config, data, device, step_offset, out_dir, save_best)
                state.save(state_path, trainer, resume_at)
                window = _Window(first_step=state.step + 1)
                if callback is not None:
                    callback(report)
        if state.position >= len(order):
            state.epoch, state.position = state.epoch + 1, 0
    result = _phase_result(trainer, state, data)
    write_json(done, asdict(result))
    state_path.unlink(missing_ok=True)   # the phase is done: its resume state is no longer needed
    return result


def _train_one(trainer: Trainer, state: ResumeState, window: _Window, config: TrialConfig, data: TaskData,
               order: list[int], device: torch.device, on_mix: OnMix | None) -> None:
    indices = order[state.position:state.position + config.batch_size]
    batch, labels = data.collator(rows_at(data.train, indices))
    batch = {k: v.to(device) for k, v in batch.items()}
    started = time.perf_counter()
    result = train_step(trainer.model, trainer.optimizer, batch, labels.to(device), trainer.method, trainer.settings,
                        trainer.generator, scheduler=trainer.scheduler, clip_norm=config.clip,
                        autocast_dtype=trainer.autocast_dtype, on_mix=on_mix, host_generator=trainer.host_generator)
    window.seconds += time.perf_counter() - started
    state.timing["train"] += time.perf_counter() - started
    window.losses.append(result.loss)
    window.examples += len(indices)
    state.position += len(indices)
    state.step += 1


def _evaluate(trainer: Trainer, state: ResumeState, window: _Window, config: TrialConfig, data: TaskData,
              device: torch.device, step_offset: int, out_dir: Path, save_best: bool) -> EvalReport:
    """Evaluate, keep the best (its weights in ``out_dir/best`` with ``save_best``) and each
    round's best, and add the evaluation to the history."""
    waited = time.perf_counter()
    train_loss = window.mean_loss(trainer.phase, trainer.method, getattr(config, trainer.phase).lr)
    window.seconds += time.perf_counter() - waited      # what the device still had to do of the steps
    state.timing["train"] += time.perf_counter() - waited
    started = time.perf_counter()
    accuracy = evaluate(trainer.model, data, config.eval_batch_size, device, trainer.autocast_dtype)
    state.timing["eval"] += time.perf_counter() - started
    selection = float(np.mean([accuracy[s] for s in data.task.selection]))
    is_best = selection > state.best["selection"]
    if is_best:
        state.best = {"selection": selection, "accuracy": accuracy, "step": state.step}
        if save_best:
            trainer.model.save_pretrained(out_dir / "best")
    for selector in set((data.task.selected_by or {}).values()):
        if accuracy[selector] > state.rounds.get(selector, {}).get("selection", -1.0):
            state.rounds[selector] = {"selection": accuracy[selector], "accuracy": accuracy}
    report = EvalReport(phase=trainer.phase, global_step=step_offset + state.step, phase_step=state.step,
                        epoch=state.step / trainer.steps_per_epoch, accuracy=accuracy, selection=selection,
                        train_loss=train_loss,
                        examples_per_sec=window.examples / max(window.seconds, 1e-9), is_best=is_best,
                        checkpoint_dir=str(out_dir))
    state.history.append({k: v for k, v in asdict(report).items() if k != "checkpoint_dir"})
    return report


def _phase_result(trainer: Trainer, state: ResumeState, data: TaskData) -> PhaseResult:
    selected_by = data.task.selected_by or {}
    rounds = state.rounds
    return PhaseResult(phase=trainer.phase, method=trainer.method, best_selection=state.best["selection"],
                       best_accuracy=state.best["accuracy"], best_step=state.best["step"], steps=state.step,
                       history=state.history,
                       round_best_accuracy={split: rounds[by]["accuracy"][split] for split, by in selected_by.items()},
                       round_best_selection={by: rounds[by]["selection"] for by in set(selected_by.values())},
                       train_seconds=state.timing["train"], eval_seconds=state.timing["eval"],
                       resumed_at=state.resumed_at)


# ------------------------------------------------------------------------------ the fine-tune


def round_best(phases: list[PhaseResult], task) -> dict[str, float]:
    """Per round, over both phases: each split at the checkpoint where its round's selecting
    split was best (a tie goes to the earlier phase, as for the selection over both phases)."""
    out = {}
    for split, by in (task.selected_by or {}).items():
        holder = max(phases, key=lambda p: p.round_best_selection.get(by, -1.0))
        out[split] = holder.round_best_accuracy[split]
    return out


def finetune(config: TrialConfig, out_dir: str | os.PathLike, *, phases: tuple[str, ...] = PHASES,
             phase1_checkpoint: str | os.PathLike | None = None, phase1_result: PhaseResult | None = None,
             callback: Callable[[EvalReport], None] | None = None, data: TaskData | None = None,
             on_step: Callable[[str, int, int], None] | None = None,
             keep_phase2_best: bool = True, on_mix: OnMix | None = None) -> FinetuneResult:
    """Run the phases asked for. Phase 2 starts from ``phase1_checkpoint`` when given (the sweep
    shares one phase 1 across methods), else from this run's own phase 1. Phase 1's best weights
    are always kept (phase 2 starts from them); phase 2's when ``keep_phase2_best``."""
    out = Path(out_dir)
    device = torch.device(resolve_device(config.device))
    model_path = resolve_model_path(config.model)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    task = get_task(config.task)
    if data is None:
        data = load_task_data(task, tokenizer, max_length=config.max_length, data_dir=config.data_dir,
                              seed=config.seed, train_fraction=config.train_fraction,
                              max_train_examples=config.max_train_examples,
                              max_eval_examples=config.max_eval_examples, pad_to=config.pad_to,
                              dev_fraction=config.dev_fraction if config.selection == "dev-split" else None)
    out.mkdir(parents=True, exist_ok=True)   # only once model and data have loaded: a bad input leaves nothing
    settings = mixup_settings(config, tokenizer, data.task)
    phase1 = phase1_result
    if "phase1" in phases and phase1_checkpoint is None:
        phase1 = run_phase("phase1", config, data, model_path, out / "phase1", device,
                           settings, callback=callback, on_step=on_step)
        phase1_checkpoint = out / "phase1" / "best"
    phase2 = None
    if "phase2" in phases:
        if phase1_checkpoint is None or not Path(phase1_checkpoint).is_dir():
            raise ValueError(f"phase 2 needs a phase-1 checkpoint directory, got {phase1_checkpoint!r}")
        offset = phase1.steps if phase1 is not None else 0
        phase2 = run_phase("phase2", config, data, str(phase1_checkpoint), out / "phase2", device,
                           settings, step_offset=offset, callback=callback,
                           on_step=on_step, save_best=keep_phase2_best, on_mix=on_mix)
    candidates = [p for p in (phase1, phase2) if p is not None]
    best = max(candidates, key=lambda p: p.best_selection)
    result = FinetuneResult(config=config.model_dump(mode="json"), phase1=phase1, phase2=phase2,
                            best_selection=best.best_selection, best_accuracy=best.best_accuracy,
                            best_phase=best.phase, round_best_accuracy=round_best(candidates, task))
    write_json(out / "summary.json", result.to_json())
    return result
