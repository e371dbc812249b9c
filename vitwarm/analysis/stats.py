"""The statistics every study states, in one place: spread over seeds and the paired comparison's rule.

A cell's accuracy over n seeds is reported as its mean with the standard deviation (``sd``, ddof 1) and the
standard error of the mean (``se`` = sd / sqrt(n)).

A comparison of two cells is paired by seed: seed s of both cells shares the image order and the image model's
initial weights, so the per-seed differences d_1..d_n carry less of the seed-to-seed spread. Their mean is
reported with its standard error, n, the 95% interval from Student's t with n - 1 degrees of freedom
(mean ± t_{0.975, n-1} · se; t_{0.975} = 4.30 at n = 3, 2.78 at n = 5) and the two-sided p-value of the
paired t-test. A difference is **shown** when that interval excludes zero (equivalently p < 0.05). The
quantiles and p-values are scipy's (``scipy.stats.ttest_1samp`` on the differences, which is
``ttest_rel`` on the two cells' per-seed values).

With n = 1, or differences that do not vary (se = 0), there is no interval: nothing is shown.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

LEVEL = 0.95  # the confidence level of every interval a report states
RULE = ("shown: the 95% interval of the mean paired difference, from Student's t with n-1 degrees of freedom, "
        "excludes zero")


def spread(scores: list[float]) -> dict:
    """n, mean, std (sd, ddof 1) and sem (se) over seeds; the spreads are None for n < 2."""
    n = len(scores)
    std = float(np.std(scores, ddof=1)) if n > 1 else None
    return {
        "n": n,
        "mean": float(np.mean(scores)) if n else None,
        "std": std,
        "sem": std / math.sqrt(n) if std is not None else None,
    }


def paired(differences: list[float]) -> dict:
    """The paired comparison of per-seed ``differences``: :func:`spread`, ``df``, ``t``, the 95% interval
    ``ci`` ([low, high]), the two-sided ``p`` and ``shown`` (the interval excludes zero)."""
    row = {**spread(differences), "df": None, "t": None, "ci": None, "p": None, "shown": False}
    if not row["sem"]:
        return row
    test = stats.ttest_1samp(differences, 0.0)
    interval = test.confidence_interval(LEVEL)
    low, high = float(interval.low), float(interval.high)
    return row | {"df": int(test.df), "t": float(test.statistic), "ci": [low, high], "p": float(test.pvalue),
                  "shown": low > 0 or high < 0}


def ci_text(ci: list[float], digits: int = 2) -> str:
    """``[-0.49, +4.67]``: a 95% interval as every table writes it."""
    return f"[{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]"


def interval_text(row: dict, digits: int = 2) -> str:
    """``+2.09 [-0.49, +4.67]``: a mean with its 95% interval, or with ``(n=1)`` where there is none."""
    if row.get("ci") is None:
        return f"{row['mean']:+.{digits}f} (no interval, n={row['n']})"
    return f"{row['mean']:+.{digits}f} {ci_text(row['ci'], digits)}"


def bootstrap_interval(values: np.ndarray, estimate, resamples: int = 2000, seed: int = 0) -> tuple:
    """Percentile bootstrap over seeds: ``values`` is (seeds, k) — each seed's k numbers, resampled together —
    and ``estimate(rows)`` maps a resample (m, k) to a sortable result. Returns the results at the 2.5th and
    97.5th percentiles (by sort order). A fixed ``seed`` keeps a report reproducible.

    With 3–5 seeds the bootstrap distribution has few distinct resamples and is known to be too narrow; the
    pages say so where they quote it.
    """
    rng = np.random.default_rng(seed)
    n = values.shape[0]
    results = sorted((estimate(values[rng.integers(0, n, n)]) for _ in range(resamples)), key=lambda r: r[0])
    alpha = (1 - LEVEL) / 2
    low = results[int(math.floor(alpha * (resamples - 1)))]
    high = results[int(math.ceil((1 - alpha) * (resamples - 1)))]
    return low, high


def mean_interval(scores: list[float]) -> list[float] | None:
    """The 95% interval of a mean over seeds from Student's t with n - 1 degrees of freedom (mean ± t·se), or
    None below two seeds or without spread."""
    row = spread(scores)
    if not row["sem"]:
        return None
    half = float(stats.t.ppf(0.5 + LEVEL / 2, row["n"] - 1)) * row["sem"]
    return [row["mean"] - half, row["mean"] + half]


def welch(first: list[float], second: list[float]) -> dict:
    """``mean(first) - mean(second)`` for two independent samples (no pairing: other cells, other seeds' runs),
    with Welch's 95% interval and two-sided p (scipy's ``ttest_ind``, unequal variances) and ``shown``."""
    row = {"mean": float(np.mean(first) - np.mean(second)), "n": [len(first), len(second)], "df": None,
           "ci": None, "p": None, "shown": False}
    if len(first) < 2 or len(second) < 2 or not (np.std(first) or np.std(second)):
        return row
    test = stats.ttest_ind(first, second, equal_var=False)
    interval = test.confidence_interval(LEVEL)
    low, high = float(interval.low), float(interval.high)
    return row | {"df": float(test.df), "ci": [low, high], "p": float(test.pvalue), "shown": low > 0 or high < 0}
