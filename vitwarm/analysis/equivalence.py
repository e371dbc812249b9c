"""Data equivalence: how many baseline image samples a warm-up is worth (docs/sweeps.md has a worked example).

Each warm-up cell is compared with the baseline (``warmup.fraction`` = 0) runs of the same context: on the
baseline's piecewise-linear accuracy-vs-images curve it finds the image samples S* that reach the warm-up
cell's accuracy, and reports the saved fraction ``1 - S_w / S*`` and the worth ``S* / S_w - 1``.

Both sides use the same seeds: those of the warm-up cell that every point of the curve has. A 3-seed cell
set against a 5-seed baseline mean would compare other image orders and initial weights as well (a study's
seeds 0-2 averaged a point below its seeds 0-4).
"""

from __future__ import annotations

import functools

import numpy as np

from vitwarm.analysis.paired import environment_gap, machines, runs_by_seed, seed_mean
from vitwarm.analysis.results import (
    FRACTION_KEY,
    Cell,
    RunResult,
    SweepResults,
    fraction_of,
    hashable,
    is_amount,
    is_control,
    mean_of,
    split_keys,
)
from vitwarm.analysis.stats import bootstrap_interval, spread


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
    them, and grouped by what sets their images: the amount keys and, for a compute-matched control, the
    warm-up fraction it is matched to. Each point has the mean image samples (a control matched to each
    seed's own warm-up run sees a few more or fewer images per seed, and is still one point), the metric's
    :func:`spread` over all its runs (what the plot draws) and its runs by seed (``by_seed``). Runs
    without a metric or with no image samples (nothing to put on the x axis) are left out.
    """
    context_keys, _ = split_keys(results.cell_keys)
    amount_keys = [k for k in results.cell_keys if is_amount(k)]
    groups: dict[tuple, dict[tuple, list[RunResult]]] = {}
    for run in results.runs:
        summary = run.summary
        if fraction_of(run.config) != 0 or summary.get(metric) is None or not summary.get("image_samples"):
            continue
        context = tuple(hashable(run.config.get(k)) for k in context_keys)
        # A compute-matched control has the budget keys of a baseline but more images, set by its fraction.
        control = run.config.get(FRACTION_KEY) if is_control(run.config) else None
        amount = tuple(hashable(run.config.get(k)) for k in amount_keys) + (control,)
        groups.setdefault(context, {}).setdefault(amount, []).append(run)
    curves = {}
    for context, by_amount in groups.items():
        points = [
            {
                "image_samples": mean_of([r.summary["image_samples"] for r in runs]),
                **spread([r.summary[metric] for r in runs]),
                "by_seed": runs_by_seed(runs, metric),
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


def crossing(rows: np.ndarray, xs: list[float], log_x: bool) -> tuple[float, str]:
    """Where the curve through ``xs`` of a table of seeds' rows (the compared cell's metric, then the curve's
    points' metrics) reaches the cell's mean: :func:`invert_curve` on the rows' means."""
    means = rows.mean(axis=0)
    return invert_curve(xs, [float(m) for m in means[1:]], float(means[0]), log_x)


def data_equivalence(
    cell_keys: list[str], cells: list[Cell], stats: list[dict], curves: dict[tuple, list[dict]], metric: str,
    log_x: bool = False,
) -> tuple[list[dict], list[str]]:
    """Data-equivalence estimate of every warm-up cell against its context's baseline curve (from
    :func:`baseline_curves`), on matched seeds: the warm-up cell's seeds that every point of the curve has
    (``seeds``); the curve's points and a_w are means over those seeds only. ``stats`` are the cells' rows
    (vitwarm.analysis.results.cell_stats), in the order of ``cells``.

    The interval (``low``, ``high``) is a 95% percentile bootstrap over the matched seeds
    (vitwarm.analysis.stats.bootstrap_interval): a seed's warm-up run and its baseline points are drawn
    together and S* found again for each resample, so the curve's own seed noise counts as well as the
    warm-up's. With 3-5 seeds such an interval is too narrow; the pages say so. ``machines`` says whether
    all the runs used ran alike (vitwarm.analysis.paired.machines).
    Returns the estimates and notes on the cells that could not be estimated.
    """
    context_keys, _ = split_keys(cell_keys)
    estimates, notes = [], []
    for cell, row in zip(cells, stats):
        if row["mean"] is None or row["warmup_fraction"] == 0:
            continue
        label = ", ".join(f"{k}={row[k]}" for k in cell_keys)
        points = curves.get(tuple(row[k] for k in context_keys), [])
        if len({p["image_samples"] for p in points}) < 2:
            notes.append(f"{label}: no data equivalence, needs baseline runs at two or more image amounts")
            continue
        warm = runs_by_seed(cell.runs, metric)
        seeds = sorted(set(warm).intersection(*(p["by_seed"] for p in points)))
        if not seeds:
            notes.append(f"{label}: no data equivalence, no seed of it is in every baseline point")
            continue
        xs = [p["image_samples"] for p in points]
        # (seeds, 1 + points): each matched seed's warm-up accuracy and its baseline points, resampled together
        table = np.array([[seed_mean(warm[s], metric)] + [seed_mean(p["by_seed"][s], metric) for p in points]
                          for s in seeds])
        s_w, (a_w, *ys) = row["image_samples"], table.mean(axis=0)
        low, high = bootstrap_interval(table, functools.partial(crossing, xs=xs, log_x=log_x))
        used = {s: warm[s] + [r for p in points for r in p["by_seed"][s]] for s in seeds}
        estimates.append({
            **{k: row[k] for k in cell_keys},
            "metric": float(a_w),
            "sem": spread(list(table[:, 0]))["sem"],
            "seeds": seeds,
            "baseline": [{"image_samples": x, "mean": float(y)} for x, y in zip(xs, ys)],
            "image_samples": s_w,
            "point": _equivalence(s_w, *invert_curve(xs, [float(y) for y in ys], float(a_w), log_x)),
            # a 95% percentile bootstrap over the matched seeds (warm-up run and baseline points of a seed
            # drawn together); with 3-5 seeds it is too narrow, and a bound where a resample leaves the curve
            "low": _equivalence(s_w, *low),
            "high": _equivalence(s_w, *high),
            # seed by seed, as in a paired table: the warm-up run against the baseline runs of its seed
            "machines": machines({s: environment_gap(runs) for s, runs in used.items()}),
        })
    return estimates, notes
