"""Search spaces over any trial setting: grid, seeded random draws, and adaptive proposals (TPE).

Every proposed configuration is an ordinary content-addressed cell trained on ``trial_seed``, so
a rerun trains nothing, a larger budget trains only the new proposals, and two drivers never
train one configuration twice. Grid and random proposals are fixed by the file (the k-th random
proposal depends only on the seed, the task, the method and k, so raising the budget keeps the
first ones). Adaptive proposals depend on results: each is logged to storage before it trains
(``<storage>/<sweep>/search/<task>--<method>.json``), and proposal k comes from a study seeded
with (seed, task, method, k) into which every finished result is replayed first, so the same
finished results give the same proposal, and a killed driver's logged proposals are trained,
not proposed again. The proposer itself (Optuna's TPE through Ray Tune's searcher) lives in
``trainables`` with the rest of Ray.

After the budget of a (task, method) is spent, ``confirm_seeds`` trains its best configuration on
those seeds: the best of N single-seed trials is biased upward, their mean ± std is not.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ssmix.config import PhaseConfig, Seed, TrialSettings
from ssmix.methods import METHODS, MIXUP_SETTINGS

SEARCHABLE = sorted([name for name in TrialSettings.model_fields if name not in ("phase1", "phase2")]
                    + [f"{phase}.{key}" for phase in ("phase1", "phase2") for key in PhaseConfig.model_fields]
                    + ["mix_ratio"])


def applies_to(key: str, method: str) -> bool:
    """A mixup setting is searched only for the methods that read it; any other setting always."""
    return key not in MIXUP_SETTINGS or key in METHODS[method].reads


class Dimension(BaseModel):
    """One searched setting: ``uniform``/``loguniform`` on [low, high], ``int`` in [low, high],
    or ``choice`` among ``values``."""

    model_config = ConfigDict(extra="forbid")
    distribution: Literal["uniform", "loguniform", "int", "choice"] = Field(description="how the setting is drawn")
    low: float | None = Field(default=None, description="smallest value (uniform, loguniform, int)")
    high: float | None = Field(default=None, description="largest value (uniform, loguniform, int)")
    values: list[Any] | None = Field(default=None, description="the values to choose among (choice)")

    @model_validator(mode="after")
    def _bounds(self):
        if self.distribution == "choice":
            if not self.values:
                raise ValueError("choice needs a non-empty list `values`")
            if self.low is not None or self.high is not None:
                raise ValueError("choice takes `values`, not low/high")
            return self
        if self.values is not None:
            raise ValueError(f"{self.distribution} takes low and high, not `values`")
        if self.low is None or self.high is None:
            raise ValueError(f"{self.distribution} needs low and high")
        if not self.low < self.high:
            raise ValueError(f"low {self.low} must be below high {self.high}")
        if self.distribution == "loguniform" and self.low <= 0:
            raise ValueError(f"loguniform needs low > 0, got {self.low}")
        if self.distribution == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("int needs integer low and high")
        return self

    def extremes(self) -> list:
        """Values a configuration may take at the edges (validated against the trial config)."""
        if self.distribution == "choice":
            return list(self.values)
        if self.distribution == "int":
            return [int(self.low), int(self.high)]
        return [self.low, self.high]

    def draw(self, u: float):
        """The value at quantile ``u`` in [0, 1)."""
        if self.distribution == "choice":
            return self.values[min(int(u * len(self.values)), len(self.values) - 1)]
        if self.distribution == "int":
            return int(self.low) + min(int(u * (self.high - self.low + 1)), int(self.high - self.low))
        if self.distribution == "loguniform":
            return float(math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low))))
        return float(self.low + u * (self.high - self.low))


class SearchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    algorithm: Literal["grid", "random", "tpe"] = Field(description="grid: every combination of choices; "
                                                         "random: seeded draws; tpe: Optuna's TPE on the results so far")
    space: dict[str, Dimension] = Field(min_length=1, description="trial setting -> distribution; "
                                        "phases as phase1.lr, phase2.weight_decay ...")
    trials: int | None = Field(default=None, ge=1, description="budget per task and method (grid: every "
                               "combination, leave out)")
    seed: Seed = Field(default=0, description="seeds the proposals (random draws, TPE)")
    trial_seed: Seed = Field(default=0, description="the seed every search trial trains with")
    max_concurrent: int = Field(default=2, ge=1, description="TPE: proposals of one task and method in flight "
                                "at once (fewer = more adaptive)")
    startup_trials: int = Field(default=4, ge=1, description="TPE: random proposals before it models results")
    metric: Literal["selection_accuracy"] = Field(default="selection_accuracy", description="what is maximised: "
                                                  "phase 2's best selection accuracy")
    selection: Literal["eval", "dev-split"] = Field(default="eval", description="dev-split: select on a "
                                                    "held-out part of train (TREC has no dev split)")
    confirm_seeds: list[Seed] = Field(default_factory=list, description="train the best configuration on these "
                                     "seeds and report mean ± std")

    @model_validator(mode="after")
    def _budget(self):
        unknown = [key for key in self.space if key not in SEARCHABLE]
        if unknown:
            raise ValueError(f"unknown trial setting(s) {unknown} in space; searchable: {', '.join(SEARCHABLE)}")
        if self.algorithm == "grid":
            if self.trials is not None:
                raise ValueError("grid runs every combination of its choices: leave `trials` out")
            bad = [k for k, d in self.space.items() if d.distribution != "choice"]
            if bad:
                raise ValueError(f"grid needs `choice` values for every setting; not for {bad}")
        elif self.trials is None:
            raise ValueError(f"{self.algorithm} needs a budget: `trials: N` (per task and method)")
        return self

    def space_for(self, method: str) -> dict[str, Dimension]:
        return {key: dim for key, dim in self.space.items() if applies_to(key, method)}

    def budget(self, method: str) -> int:
        if self.algorithm == "grid":
            return math.prod(len(d.values) for d in self.space_for(method).values())
        return self.trials


def with_overrides(trial: dict, params: dict[str, Any]) -> dict:
    """``trial`` (a TrialSettings-like dict) with dotted ``params`` applied."""
    out = {key: (dict(value) if isinstance(value, dict) else value) for key, value in trial.items()}
    for key, value in params.items():
        phase, _, inner = key.partition(".")
        if inner:
            out.setdefault(phase, {})[inner] = value
        else:
            out[key] = value
    return out


def _unit_draws(seed: int, task: str, method: str, index: int, count: int) -> list[float]:
    """``count`` numbers in [0, 1) fixed by (seed, task, method, index) alone."""
    draws = []
    for d in range(count):
        digest = hashlib.sha256(f"{seed}/{task}/{method}/{index}/{d}".encode()).digest()
        draws.append(int.from_bytes(digest[:8], "big") / 2**64)
    return draws


def planned_proposals(search: SearchConfig, task: str, method: str) -> list[dict]:
    """Grid and random: every proposal, fixed by the file."""
    space = search.space_for(method)
    if search.algorithm == "grid":
        keys = list(space)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(space[k].values for k in keys))]
    if search.algorithm == "random":
        return [{key: dim.draw(u) for (key, dim), u in
                 zip(space.items(), _unit_draws(search.seed, task, method, k, len(space)))}
                for k in range(search.trials)]
    return []


def proposal_seed(search: SearchConfig, task: str, method: str, index: int) -> int:
    return int(_unit_draws(search.seed, task, method, index, 1)[0] * 2**31)


# --------------------------------------------------------------------- the proposal log (TPE)


@dataclass
class Proposal:
    index: int
    params: dict
    seen: int            # finished results replayed into the study before it was proposed


class ProposalLog:
    """Adaptive proposals of one (task, method), on the sweep's storage, written before they train."""

    def __init__(self, storage, task: str, method: str):
        self.storage = storage
        self.key = f"search/{task}--{method}.json"
        self.lock = f"search/.{task}--{method}.lock"

    def read(self) -> list[Proposal]:
        import json

        text = self.storage.read_text(self.key)
        return [Proposal(**p) for p in json.loads(text)["proposals"]] if text else []

    def append(self, make, budget: int) -> tuple[Proposal | None, list[Proposal]]:
        """Under the log's lock: if the budget allows, ``make(index)`` -> Proposal, logged. Returns
        it (None when the budget is spent) and the whole log as it now is."""
        import json

        with self.storage.lock(self.lock):
            proposals = self.read()
            if len(proposals) >= budget:
                return None, proposals
            proposal = make(len(proposals))
            proposals.append(proposal)
            self.storage.write_text(self.key, json.dumps({"proposals": [p.__dict__ for p in proposals]},
                                                         indent=2, default=str))
            return proposal, proposals
