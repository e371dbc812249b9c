"""Data equivalence: how many baseline image samples a warm-up is worth (docs/sweeps.md has a worked example).

Each warm-up cell is compared with the baseline (``warmup.fraction`` = 0) runs of the same context: on the
baseline's piecewise-linear accuracy-vs-images curve it finds the image samples S* that reach the warm-up
cell's accuracy, and reports the saved fraction ``1 - S_w / S*`` and the worth ``S* / S_w - 1``.
"""

from __future__ import annotations

import numpy as np

from vitwarm.sweeps.results import (
    RunResult,
    SweepResults,
    fraction_of,
    hashable,
    is_amount,
    mean_of,
    seed_stats,
    split_keys,
)


def invert_curve(xs: list[float], ys: list[float], target: float, log_x: bool = False) -> tuple[float, str]:
    """The x at which the piecewise-linear curve through (xs, ys) (two points or more) first reaches ``target``.

    Returns ``(x, "=")`` inside the curve's range. Outside it no extrapolation is made: ``(x_max, ">")``
    when ``target`` is above every y (the answer lies beyond the largest x) and ``(x_min, "<")`` when it is
    below every y. ``log_x`` interpolates linearly in log x instead. The first crossing is used so that a
    non-monotone curve gives the smaller, more conservative x.
    """
    order = np.argsort(xs)
    xs = np.asarray(xs, dtype=float)[order]
    ys = np.asarray(ys, dtype=float)[order]
    if target > ys.max():
        return float(xs[-1]), ">"
    if target < ys.min():
        return float(xs[0]), "<"
    px = np.log(xs) if log_x else xs
    # target lies within [min y, max y], so some segment crosses it.
    crosses = (np.minimum(ys[:-1], ys[1:]) <= target) & (target <= np.maximum(ys[:-1], ys[1:]))
    i = int(np.flatnonzero(crosses)[0])
    t = 0.0 if ys[i + 1] == ys[i] else (target - ys[i]) / (ys[i + 1] - ys[i])
    x = px[i] + t * (px[i + 1] - px[i])
    return float(np.exp(x) if log_x else x), "="


def baseline_curves(results: SweepResults, metric: str) -> dict[tuple, list[dict]]:
    """Per context (cell keys that are neither amounts nor warm-up settings): the baseline's points.

    Baseline runs (fraction 0) are pooled across warm-up settings such as the grammar, which do not affect
    them, and grouped by their amount keys; each point has the mean image samples and the metric's
    :func:`seed_stats`. Runs without a metric or with no image samples (nothing to put on the x axis) are left
    out.
    """
    context_keys, _ = split_keys(results.cell_keys)
    amount_keys = [k for k in results.cell_keys if is_amount(k)]
    groups: dict[tuple, dict[tuple, list[RunResult]]] = {}
    for run in results.runs:
        summary = run.summary
        if fraction_of(run.config) != 0 or summary.get(metric) is None or not summary.get("image_samples"):
            continue
        context = tuple(hashable(run.config.get(k)) for k in context_keys)
        # The images seen as well: a compute-matched run has the budget keys of a baseline but more images.
        amount = tuple(hashable(run.config.get(k)) for k in amount_keys) + (summary["image_samples"],)
        groups.setdefault(context, {}).setdefault(amount, []).append(run)
    curves = {}
    for context, by_amount in groups.items():
        points = [
            {
                "image_samples": mean_of([r.summary["image_samples"] for r in runs]),
                **seed_stats([r.summary[metric] for r in runs]),
            }
            for runs in by_amount.values()
        ]
        curves[context] = sorted(points, key=lambda p: p["image_samples"])
    return curves


def _equivalence(s_w: float, s_star: float, relation: str) -> dict:
    # saved and worth both grow with S*, so they carry S*'s relation (a bound stays a bound).
    return {
        "s_star": s_star,
        "relation": relation,
        "saved": 1.0 - s_w / s_star,
        "worth": s_star / s_w - 1.0,
    }


def data_equivalence(
    cell_keys: list[str], stats: list[dict], curves: dict[tuple, list[dict]], log_x: bool = False
) -> tuple[list[dict], list[str]]:
    """Data-equivalence estimate of every warm-up cell against its context's baseline curve (from
    :func:`baseline_curves`).

    The interval comes from the seeds of the warm-up cell: S* is also found at a_w - sem and a_w + sem.
    Returns the estimates and notes on the cells that could not be estimated.
    """
    context_keys, _ = split_keys(cell_keys)
    estimates, notes = [], []
    for row in stats:
        if row["mean"] is None or row["warmup_fraction"] == 0:
            continue
        context = tuple(row[k] for k in context_keys)
        label = ", ".join(f"{k}={row[k]}" for k in cell_keys)
        points = curves.get(context, [])
        xs = [p["image_samples"] for p in points]
        if len(set(xs)) < 2:
            notes.append(f"{label}: no data equivalence, needs baseline runs at two or more image amounts")
            continue
        ys = [p["mean"] for p in points]
        s_w, a_w = row["image_samples"], row["mean"]
        sem = row["sem"] or 0.0
        estimate = {
            **{k: row[k] for k in cell_keys},
            "metric": a_w,
            "sem": row["sem"],
            "image_samples": s_w,
            "point": _equivalence(s_w, *invert_curve(xs, ys, a_w, log_x)),
            "low": _equivalence(s_w, *invert_curve(xs, ys, a_w - sem, log_x)),
            "high": _equivalence(s_w, *invert_curve(xs, ys, a_w + sem, log_x)),
        }
        estimates.append(estimate)
    return estimates, notes
