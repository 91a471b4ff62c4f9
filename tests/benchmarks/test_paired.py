"""The learning benchmark's intervals on synthetic data with a known answer."""

import numpy as np
import pytest

from vmerpo.benchmarks.paired import bootstrap_mean, paired_difference


def _draw(rng, n_tasks, n_draws, task_sd, draw_sd, mean=0.0):
    task_effect = rng.normal(0.0, task_sd, n_tasks)
    return {(t, d): mean + task_effect[t] + rng.normal(0.0, draw_sd)
            for t in range(n_tasks) for d in range(n_draws)}


def test_the_interval_covers_the_true_mean_about_95_percent_of_the_time():
    """Tasks and draws with known variances: the 95 % interval of the mean covers the true mean
    in 88-99 % of 200 independent data sets (binomial noise at 200 trials is +-3 %; the
    percentile bootstrap of 10 clusters is a little narrow)."""
    rng = np.random.default_rng(0)
    hits = 0
    for i in range(200):
        data = _draw(rng, 10, 3, task_sd=0.2, draw_sd=0.1, mean=0.5)
        ci = bootstrap_mean(data, n_boot=1000, seed=i)
        hits += ci["low"] <= 0.5 <= ci["high"]
    assert 0.88 <= hits / 200 <= 0.99


def test_the_width_matches_the_two_level_variance():
    """Var(mean) = task_sd^2 / T + draw_sd^2 / (T D) for a balanced design: the bootstrap's
    half-width is 1.96 times that standard error to within 25 % (the bootstrap's (T-1)/T bias
    and the finite sample)."""
    rng = np.random.default_rng(1)
    T, D, task_sd, draw_sd = 40, 3, 0.3, 0.2
    se = np.sqrt(task_sd**2 / T + draw_sd**2 / (T * D))
    widths = [bootstrap_mean(_draw(rng, T, D, task_sd, draw_sd), n_boot=2000, seed=i)["half_width"]
              for i in range(20)]
    assert np.mean(widths) == pytest.approx(1.96 * se, rel=0.25)


def test_draws_that_share_a_task_are_not_counted_as_independent():
    """All the variation between tasks, none within: 10 tasks x 3 identical draws must give the
    interval of 10 units, not of 30 (a naive standard error over units is sqrt(3) too small)."""
    rng = np.random.default_rng(2)
    per_task = rng.normal(0.0, 1.0, 10)
    three = bootstrap_mean({(t, d): per_task[t] for t in range(10) for d in range(3)}, seed=0)
    one = bootstrap_mean({(t, 0): per_task[t] for t in range(10)}, seed=0)
    assert three["half_width"] == pytest.approx(one["half_width"], rel=0.05)
    naive = 1.96 * np.std(np.repeat(per_task, 3), ddof=1) / np.sqrt(30)
    assert three["half_width"] > 1.4 * naive


def test_pairing_removes_the_shared_task_effect():
    """Two methods that differ by exactly +0.1 on every unit, with large task effects: the paired
    difference is 0.1 with a zero-width interval; unpaired intervals are wide."""
    rng = np.random.default_rng(3)
    a = _draw(rng, 10, 3, task_sd=0.3, draw_sd=0.1)
    b = {u: v - 0.1 for u, v in a.items()}
    d = paired_difference(a, b)
    assert d["mean"] == pytest.approx(0.1)
    assert d["half_width"] == pytest.approx(0.0, abs=1e-12)
    assert bootstrap_mean(a)["half_width"] > 0.1
    assert d["n_units"] == 30 and d["n_tasks"] == 10


def test_paired_difference_uses_the_common_units_only_and_refuses_none():
    a = {(0, 0): 1.0, (0, 1): 0.5, (1, 0): 0.0}
    b = {(0, 0): 0.0, (1, 0): 0.0, (2, 0): 1.0}
    d = paired_difference(a, b, n_boot=500)
    assert d["n_units"] == 2 and d["mean"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="share no"):
        paired_difference({(0, 0): 1.0}, {(1, 0): 1.0})
    with pytest.raises(ValueError, match="no units"):
        bootstrap_mean({})


def test_the_interval_is_reproducible_for_a_seed():
    data = _draw(np.random.default_rng(4), 5, 3, 0.2, 0.1)
    assert bootstrap_mean(data, seed=7) == bootstrap_mean(data, seed=7)
