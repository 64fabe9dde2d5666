"""Seed statistics the report and the sweep's summary runs share: the paired comparison of two
methods over the seeds they both have (mean difference, 95% bootstrap interval, paired t-test),
Holm's correction across a table, and the smallest difference the seeds can detect; aggregates
over tasks with stratified bootstrap intervals and the probability of improvement (rliable's
definitions); the expected best score against the number of trials (Dodge et al.); and the seeds
a difference needs.

Below ``MIN_PAIRED_SEEDS`` paired seeds there is no interval, no p-value and no test: "n/a",
never a number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats


@dataclass
class Comparison:
    mean_diff: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    p_holm: float | None = None
    n: int = 0
    detectable: float | None = None    # see detectable_difference

    @property
    def significant(self) -> bool:
        return self.p_holm is not None and self.p_holm < 0.05


MIN_PAIRED_SEEDS = 3   # below this a paired test cannot tell anything apart: no interval, no p, no bold
DETECTION_POWER = 0.8
ALPHA = 0.05          # the level of every test here


def detectable_difference(diff_std: float, n: int, alpha: float = ALPHA, power: float = DETECTION_POWER) -> float:
    """The smallest true mean difference that a two-sided paired t-test at ``alpha`` finds
    ``power`` of the time, given ``n`` paired seeds whose differences spread by ``diff_std``: what
    these seeds can tell apart. From the noncentral t distribution, before any multiple-test
    correction (so it is a lower bound for the corrected table)."""
    df = n - 1
    critical = stats.t.ppf(1 - alpha / 2, df)

    def shortfall(shift: float) -> float:     # power at a standardised shift, minus the target
        found = stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift)
        return (1.0 if np.isnan(found) else found) - power    # scipy's NaN far out, where power is 1

    shift = optimize.brentq(shortfall, 0.0, 30.0)     # n >= MIN_PAIRED_SEEDS: power(30) is 1
    return float(shift * diff_std / np.sqrt(n))


def paired_comparison(method: dict[int, float], baseline: dict[int, float], seed: int = 0) -> Comparison:
    shared = sorted(set(method) & set(baseline))
    if len(shared) < 2:
        return Comparison(None, None, None, None, n=len(shared))
    diffs = np.array([method[s] - baseline[s] for s in shared])
    mean = float(diffs.mean())
    if len(shared) < MIN_PAIRED_SEEDS:
        return Comparison(mean, None, None, None, n=len(shared))
    if np.allclose(diffs, diffs[0]):
        low = high = float(diffs[0])
        p_value = None          # no variation: a t-test is undefined, say so rather than invent one
    else:
        boot = stats.bootstrap((diffs,), np.mean, confidence_level=0.95, n_resamples=10_000,
                               method="percentile", random_state=seed)
        low, high = float(boot.confidence_interval.low), float(boot.confidence_interval.high)
        p_value = float(stats.ttest_rel([method[s] for s in shared], [baseline[s] for s in shared]).pvalue)
    detectable = detectable_difference(float(diffs.std(ddof=1)), len(shared)) if p_value is not None else None
    return Comparison(mean, low, high, p_value, n=len(shared), detectable=detectable)


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


# ----------------------------------------------------------------------- across tasks (rliable)


@dataclass
class Interval:
    """A statistic and its 95% interval (None where there are too few seeds for one)."""

    value: float
    low: float | None = None
    high: float | None = None


AGGREGATES = ("mean", "iqm")
BOOTSTRAP_RESAMPLES = 2000


def _pooled(samples, axis):
    return np.concatenate(samples, axis=axis)


def _aggregate(name: str):
    """The statistic over every (task, seed) score, as rliable (Agarwal et al. 2021) computes it:
    the mean, or the IQM (the mean of the middle 50%, a 25% trimmed mean)."""
    if name == "mean":
        return lambda *samples, axis=-1: _pooled(samples, axis).mean(axis=axis)
    if name == "iqm":
        return lambda *samples, axis=-1: stats.trim_mean(_pooled(samples, axis), 0.25, axis=axis)
    raise ValueError(f"unknown aggregate {name!r}; known: {', '.join(AGGREGATES)}")


def _stratified_interval(samples: list[np.ndarray], statistic, seed: int) -> tuple[float | None, float | None]:
    """95% percentile interval of a stratified bootstrap: each task's seeds resampled within the
    task (scipy resamples each sample on its own). None where a task has a single seed."""
    if any(len(s) < 2 for s in samples):
        return None, None
    boot = stats.bootstrap(samples, statistic, n_resamples=BOOTSTRAP_RESAMPLES, method="percentile",
                           vectorized=True, random_state=seed)
    return float(boot.confidence_interval.low), float(boot.confidence_interval.high)


def across_tasks(scores: dict[str, list[float]], aggregate: str = "mean", seed: int = 0) -> Interval:
    """A method's aggregate over tasks of each task's seed scores, with its stratified bootstrap
    interval. Tasks with equal seed counts weigh equally."""
    samples = [np.asarray(values, dtype=float) for values in scores.values()]
    statistic = _aggregate(aggregate)
    low, high = _stratified_interval(samples, statistic, seed)
    return Interval(float(statistic(*samples)), low, high)


def probability_of_improvement(x: dict[str, list[float]], y: dict[str, list[float]], seed: int = 0) -> Interval:
    """P(X > Y) over the tasks both have: for each task the chance that a run of X scores above a
    run of Y (ties count half; the Mann-Whitney U over all pairs of runs), averaged over tasks;
    with a stratified bootstrap interval (Agarwal et al. 2021)."""
    tasks = [t for t in x if t in y]
    if not tasks:
        raise ValueError("no task has scores for both methods")
    samples = [np.asarray(x[t], dtype=float) for t in tasks] + [np.asarray(y[t], dtype=float) for t in tasks]
    m = len(tasks)

    def statistic(*both, axis=-1):
        # U / (n_x n_y) from the ranks of the pooled runs (ties get their average rank, so count
        # half): the same value as comparing every pair, in n log n instead of n_x n_y.
        per_task = []
        for xs, ys in zip(both[:m], both[m:]):
            n_x, n_y = xs.shape[-1], ys.shape[-1]
            ranks = stats.rankdata(np.concatenate([xs, ys], axis=-1), axis=-1)
            per_task.append((ranks[..., :n_x].sum(axis=-1) - n_x * (n_x + 1) / 2) / (n_x * n_y))
        return np.mean(per_task, axis=0)

    low, high = _stratified_interval(samples, statistic, seed)
    return Interval(float(statistic(*samples)), low, high)


# ---------------------------------------------------------------------- budget (Dodge et al.)


@dataclass
class BudgetPoint:
    k: int
    expected_best: float        # E[max selection score of k trials]
    std: float                  # its standard deviation
    expected_reported: float    # E[reported score of the trial the k trials would select]


def budget_curve(selection: list[float], reported: list[float] | None = None) -> list[BudgetPoint]:
    """Dodge et al. 2019 ("Show Your Work"): from N finished trials, the expected best selection
    score after k = 1..N trials drawn from them (with replacement), E = Σᵢ v₍ᵢ₎ pᵢ with
    pᵢ = (i/N)^k − ((i−1)/N)^k over the scores sorted v₍₁₎ ≤ … ≤ v₍N₎, its variance Σᵢ pᵢ (v₍ᵢ₎ − E)²,
    and the expected reported score of the trial so selected (same weights, ``reported`` in the
    order of ``selection``)."""
    n = len(selection)
    if n == 0:
        return []
    order = np.argsort(np.asarray(selection, dtype=float), kind="stable")
    values = np.asarray(selection, dtype=float)[order]
    shown = np.asarray(reported if reported is not None else selection, dtype=float)[order]
    i = np.arange(1, n + 1)
    points = []
    for k in range(1, n + 1):
        p = (i / n) ** k - ((i - 1) / n) ** k
        mean = float((p * values).sum())
        points.append(BudgetPoint(k, mean, float(np.sqrt(max((p * (values - mean) ** 2).sum(), 0.0))),
                                  float((p * shown).sum())))
    return points


# ------------------------------------------------------------------------------- seeds planned


def seeds_needed(diff_std: float, delta: float, alpha: float = ALPHA, power: float = DETECTION_POWER,
                 most: int = 10_000) -> int | None:
    """The fewest paired seeds with which a two-sided paired t-test at ``alpha`` finds a true mean
    difference ``delta`` ``power`` of the time, when the paired differences spread by
    ``diff_std`` (the inverse of ``detectable_difference``). None past ``most``."""
    if delta <= 0:
        raise ValueError(f"delta must be > 0, got {delta}")
    if diff_std <= 0:
        return MIN_PAIRED_SEEDS       # no spread: the fewest seeds a test is made with
    for n in range(2, most + 1):
        df = n - 1
        critical = stats.t.ppf(1 - alpha / 2, df)
        shift = delta / diff_std * np.sqrt(n)
        if stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift) >= power:
            return max(n, MIN_PAIRED_SEEDS)
    return None
