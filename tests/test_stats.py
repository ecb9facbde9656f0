"""Statistics: bootstrap determinism, Wilcoxon and Holm on hand-checkable cases."""

import numpy as np
import pytest

from paperlib import stats


def test_bootstrap_identical_for_the_same_seed():
    x = np.random.default_rng(1).normal(size=200)
    a, b = stats.bootstrap_ci(x, seed=3), stats.bootstrap_ci(x, seed=3)
    assert a == b
    c = stats.bootstrap_ci(x, seed=4)
    assert (c.low, c.high) != (a.low, a.high)
    assert a.low < a.mean < a.high
    assert a.mean == pytest.approx(x.mean())


def test_bootstrap_of_constant_values_has_zero_width():
    ci = stats.bootstrap_ci([2.5] * 10)
    assert (ci.mean, ci.low, ci.high) == (2.5, 2.5, 2.5)


def test_bootstrap_rejects_nan_and_empty():
    with pytest.raises(ValueError, match="NaN"):
        stats.bootstrap_ci([1.0, np.nan])
    with pytest.raises(ValueError, match="at least one"):
        stats.bootstrap_ci([])


def test_bootstrap_interval_covers_a_known_mean_width():
    # mean of 400 fair coin flips (values 0/100): se = 50 / sqrt(400) = 2.5 -> 95% half-width ~4.9
    x = np.tile([0.0, 100.0], 200)
    ci = stats.bootstrap_ci(x, n_boot=4000)
    assert ci.mean == 50.0
    assert 4.0 < (ci.high - ci.low) / 2 < 6.0


def test_wilcoxon_exact_small_case():
    # six positive differences with distinct ranks: exact two-sided p = 2 / 2^6
    a = np.array([1.1, 2.2, 3.3, 4.4, 5.5, 6.6])
    b = np.zeros(6)
    _, p = stats.paired_wilcoxon(a, b)
    assert p == pytest.approx(2 / 64)
    assert stats.paired_wilcoxon(a, a) == (0.0, 1.0)
    with pytest.raises(ValueError, match="equal lengths"):
        stats.paired_wilcoxon(a, a[:3])


def test_holm():
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(stats.holm([0.5, 0.9]), [1.0, 1.0])
