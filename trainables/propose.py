"""Adaptive proposals: Optuna's TPE sampler through Ray Tune's ``OptunaSearch``.

One proposal = a fresh study, seeded for that proposal alone, into which every finished result of
the (task, method) is replayed. So the same finished results and seed give the same proposal,
whatever happened to earlier drivers; nothing of a sampler's state has to survive a restart.
"""

from __future__ import annotations

import logging

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from ray.tune.search.optuna import OptunaSearch

from ssmix.sweep.search import Dimension

optuna.logging.set_verbosity(logging.WARNING)


def _distribution(dim: Dimension):
    if dim.distribution == "choice":   # Optuna takes primitives only: choose an index
        return CategoricalDistribution(list(range(len(dim.values))))
    if dim.distribution == "int":
        return IntDistribution(int(dim.low), int(dim.high))
    return FloatDistribution(dim.low, dim.high, log=dim.distribution == "loguniform")


def _encode(space: dict[str, Dimension], params: dict) -> dict:
    return {k: (space[k].values.index(v) if space[k].distribution == "choice" else v) for k, v in params.items()}


def tpe_proposal(space: dict[str, Dimension], history: list[tuple[dict, float]], seed: int,
                 startup_trials: int) -> dict:
    """The next configuration after ``history`` (params, objective to maximise)."""
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials)
    searcher = OptunaSearch(space={k: _distribution(d) for k, d in space.items()}, metric="objective",
                            mode="max", sampler=sampler)
    for params, value in history:
        searcher.add_evaluated_point(_encode(space, params), value)
    proposed = searcher.suggest("next")
    return {k: (space[k].values[v] if space[k].distribution == "choice" else v) for k, v in proposed.items()}
