"""The statistics against known truths: intervals cover the truth about 95% of the time on
synthetic data, the budget curve is the brute-force expectation, and the seed planner agrees with
simulated paired t-tests."""

import itertools

import numpy as np
import pytest
from scipy import stats as scipy_stats

from ssmix import stats

TASK_MEANS = {"a": 70.0, "b": 80.0, "c": 90.0, "d": 85.0, "e": 60.0}
SPREAD = 2.0
SEEDS = 10     # the percentile interval under-covers with fewer (docs/report.md has the figures)


def draw(rng, shift=0.0):
    return {task: list(rng.normal(mean + shift, SPREAD, SEEDS)) for task, mean in TASK_MEANS.items()}


def coverage(estimate, truth, repeats=160):
    rng = np.random.default_rng(0)
    hits = 0
    for r in range(repeats):
        interval = estimate(rng, r)
        hits += interval.low <= truth <= interval.high
    return hits / repeats


@pytest.fixture(autouse=True)
def fewer_resamples(monkeypatch):
    monkeypatch.setattr(stats, "BOOTSTRAP_RESAMPLES", 1000)    # the interval's width barely moves


def test_across_task_mean_interval_covers_the_true_mean_about_95_percent():
    truth = np.mean(list(TASK_MEANS.values()))
    found = coverage(lambda rng, r: stats.across_tasks(draw(rng), "mean", seed=r), truth)
    assert 0.85 <= found <= 0.99, found


def test_across_task_iqm_interval_covers_the_true_iqm_about_95_percent():
    # The truth: the IQM of the pooled distribution (an equal mixture of the tasks' normals).
    rng = np.random.default_rng(1)
    population = np.concatenate([rng.normal(m, SPREAD, 400_000) for m in TASK_MEANS.values()])
    truth = scipy_stats.trim_mean(population, 0.25)
    found = coverage(lambda rng, r: stats.across_tasks(draw(rng), "iqm", seed=r), truth)
    assert 0.85 <= found <= 0.99, found


def test_probability_of_improvement_interval_covers_the_true_probability():
    shift = 1.0     # X is better by 1 point on every task: P(X > Y) = Φ(1 / (σ√2)) on each
    truth = scipy_stats.norm.cdf(shift / (SPREAD * np.sqrt(2)))
    found = coverage(lambda rng, r: stats.probability_of_improvement(draw(rng, shift), draw(rng), seed=r), truth)
    assert 0.85 <= found <= 0.99, found
    same = stats.probability_of_improvement({"a": [1.0, 2.0]}, {"a": [1.0, 2.0]})
    assert same.value == 0.5                       # ties count half


def test_one_seed_per_task_gives_the_value_and_no_interval():
    result = stats.across_tasks({"a": [70.0], "b": [80.0, 82.0]})
    assert result.value == pytest.approx(232 / 3) and result.low is None and result.high is None


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_budget_curve_is_the_expectation_over_every_draw_of_k_trials(n):
    """Dodge et al.'s formula is for k trials drawn with replacement from the N finished ones:
    it equals the mean over all N^k ordered draws (of the best score, and of the reported score
    of the draw's best trial)."""
    rng = np.random.default_rng(n)
    selection, reported = list(rng.normal(80, 3, n)), list(rng.normal(78, 3, n))
    for point in stats.budget_curve(selection, reported):
        draws = list(itertools.product(range(n), repeat=point.k))
        best = [max(d, key=lambda i: selection[i]) for d in draws]
        maxima = np.array([selection[i] for i in best])
        assert point.expected_best == pytest.approx(maxima.mean())
        assert point.std == pytest.approx(maxima.std())
        assert point.expected_reported == pytest.approx(np.mean([reported[i] for i in best]))
    curve = stats.budget_curve(selection)
    assert [p.k for p in curve] == list(range(1, n + 1))
    assert all(a.expected_best <= b.expected_best + 1e-12 for a, b in zip(curve, curve[1:]))


@pytest.mark.parametrize("delta, spread", [(1.0, 1.0), (0.5, 0.6)])
def test_seeds_needed_gives_80_percent_power_in_simulated_paired_tests(delta, spread):
    n = stats.seeds_needed(spread, delta)
    rng = np.random.default_rng(7)

    def power(seeds, repeats=4000):
        diffs = rng.normal(delta, spread, (repeats, seeds))
        return (scipy_stats.ttest_1samp(diffs, 0.0, axis=1).pvalue < 0.05).mean()

    assert power(n) >= 0.8 - 0.025
    if n > stats.MIN_PAIRED_SEEDS:
        assert power(n - 1) < 0.8 + 0.025
    # the planner and the detectable difference are inverses
    assert stats.detectable_difference(spread, n) <= delta
    assert n == stats.MIN_PAIRED_SEEDS or stats.detectable_difference(spread, n - 1) > delta
