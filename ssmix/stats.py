"""Seed statistics the report and the sweep's summary runs share: the paired comparison of two
methods over the seeds they both have (mean difference, 95% bootstrap interval, paired t-test),
Holm's correction across a table, and the smallest difference the seeds can detect.

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


def detectable_difference(diff_std: float, n: int, alpha: float = 0.05, power: float = DETECTION_POWER) -> float:
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
