"""Adaptive proposals: Optuna's TPE sampler, asked directly (``ask``/``tell``), without Ray.

One proposal = a fresh in-memory study, seeded for that proposal alone, into which every finished
result of the (task, method) is replayed as a completed trial. So the same finished results and
seed give the same proposal, whatever happened to earlier drivers; nothing of a sampler's state
has to survive a restart. (The study is set up as Ray Tune's ``OptunaSearch`` sets up its own, so
proposals are the ones it made when the sweep proposed through it.)
"""

from __future__ import annotations

from ssmix.sweep.search import Dimension


def _distribution(dim: Dimension):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if dim.distribution == "choice":   # Optuna takes primitives only: choose an index
        return CategoricalDistribution(list(range(len(dim.values))))
    if dim.distribution == "int":
        return IntDistribution(int(dim.low), int(dim.high))
    return FloatDistribution(dim.low, dim.high, log=dim.distribution == "loguniform")


def tpe_proposal(space: dict[str, Dimension], history: list[tuple[dict, float]], seed: int,
                 startup_trials: int) -> dict:
    """The next configuration after ``history`` (params, objective to maximise)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = {key: _distribution(dim) for key, dim in space.items()}
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials),
                                pruner=optuna.pruners.NopPruner(), study_name="optuna", direction="maximize")
    for params, value in history:
        encoded = {k: (space[k].values.index(v) if space[k].distribution == "choice" else v) for k, v in params.items()}
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=value,
                                                  params=encoded, distributions=distributions))
    proposed = study.ask(fixed_distributions=distributions).params
    return {k: (space[k].values[v] if space[k].distribution == "choice" else v) for k, v in proposed.items()}
