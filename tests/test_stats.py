"""The statistical rule every report states (vitwarm.analysis.stats): a paired comparison's 95% interval from
Student's t with n-1 degrees of freedom and its two-sided p are scipy's paired t-test, and "shown" means
the interval excludes zero — not "more than two standard errors from zero"."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from vitwarm.analysis.stats import bootstrap_interval, interval_text, paired


def differences_with_t(n: int, t: float) -> list[float]:
    """n differences whose one-sample t statistic is exactly ``t`` (mean t·se, se 1)."""
    spread = np.arange(n) - (n - 1) / 2  # mean 0
    spread = spread / np.std(spread, ddof=1) * math.sqrt(n)  # sd sqrt(n): se 1
    return list(spread + t)


def test_a_paired_row_is_scipys_paired_t_test():
    warm, base = [68.1, 66.0, 70.2, 67.5, 69.9], [66.3, 65.1, 66.9, 67.8, 66.2]
    row = paired([w - b for w, b in zip(warm, base)])
    reference = scipy_stats.ttest_rel(warm, base)
    interval = reference.confidence_interval(0.95)
    assert row["t"] == pytest.approx(reference.statistic) and row["p"] == pytest.approx(reference.pvalue)
    assert row["ci"] == pytest.approx([interval.low, interval.high])
    assert row["df"] == 4 and row["n"] == 5
    # by hand: mean ± t_{0.975,4} · se
    half = scipy_stats.t.ppf(0.975, 4) * row["sem"]
    assert row["ci"] == pytest.approx([row["mean"] - half, row["mean"] + half])


@pytest.mark.parametrize(("n", "shown"), [(3, False), (5, True)])
def test_t_of_three_is_shown_at_five_seeds_not_at_three(n, shown):
    row = paired(differences_with_t(n, 3.0))
    assert row["t"] == pytest.approx(3.0)
    assert row["shown"] is shown
    assert (row["p"] < 0.05) is shown  # the interval and the p-value agree
    # the old rule, "more than two standard errors from zero", would have called both shown
    assert abs(row["mean"]) > 2 * row["sem"]


def test_no_interval_without_spread():
    for differences in ([2.0], [-6.0, -6.0]):
        row = paired(differences)
        assert (row["ci"], row["p"], row["shown"]) == (None, None, False)
    assert interval_text(paired([2.0])) == "+2.00 (no interval, n=1)"
    assert interval_text(paired([1.0, 2.0, 3.0])) == "+2.00 [-0.48, +4.48]"


def test_the_bootstrap_is_reproducible_and_brackets_the_estimate():
    table = np.array([[1.0], [2.0], [3.0], [10.0]])

    def mean(rows):
        return (float(rows.mean()),)

    low, high = bootstrap_interval(table, mean)
    assert (low, high) == bootstrap_interval(table, mean)  # fixed seed: the same report twice
    assert 1.0 <= low[0] < 4.0 < high[0] <= 10.0
