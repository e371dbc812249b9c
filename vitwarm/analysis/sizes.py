"""Cells against the size of the training set: a study that runs the same settings at several data sizes.

A study file's ``by_size`` names lines, each a list of cells (one per size), and the reference line
(docs/studies.md; docs/study3.md uses it)::

    by_size:
      reference: none
      lines: {none: [none_550, none_5500], W2: [W2_550, W2_5500]}

For every line and size the report gives the cell's final metric, mean with its 95% t-interval over seeds,
and for every other line:

- its **gain** over the reference cell of the same size, paired by seed (vitwarm.analysis.paired);
- whether the gain **changes with size**: the gain at the smallest size minus the gain at the largest, two
  independent sets of paired differences, with Welch's interval (vitwarm.analysis.stats.welch);
- its **worth in images**: the size n* at which the reference line, piecewise linear in log size through its
  cells' means, reaches the cell's mean; worth = n*/N - 1 for a cell of N images. No extrapolation: beyond
  the reference's smallest or largest size it is a bound ('<' or '>'). On matched seeds (the cell's seeds
  that every reference cell has), with a 95% percentile bootstrap over them: a seed's run of the cell and its
  reference runs at every size are drawn together, so the curve's own noise counts too. With 3-5 seeds the
  bootstrap is too narrow, and the report says so.

A cell's size is its training split's image count: the image phase's planned samples over budget.epochs
(runs record the budget in epochs of their split), the same for every run of the cell.
"""

from __future__ import annotations

import functools

import numpy as np

from vitwarm.analysis.equivalence import crossing
from vitwarm.analysis.paired import runs_by_seed, seed_differences, seed_mean
from vitwarm.analysis.results import CELL_KEY, Cell, RunResult
from vitwarm.analysis.stats import bootstrap_interval, mean_interval, spread, welch


def train_images(run: RunResult) -> int:
    """The size of the run's training split: its image phase's planned samples over its budget in epochs."""
    return round(run.summary["phases"]["image"]["planned_samples"] / float(run.config["budget.epochs"]))


def _size(cell: Cell) -> int:
    sizes = {train_images(run) for run in cell.runs}
    if len(sizes) > 1:
        raise ValueError(f"cell {cell.values[CELL_KEY]}: its runs trained on splits of {sorted(sizes)} images")
    return sizes.pop()


def _worth(n_star: float, relation: str, size: int) -> dict:
    return {"n_star": n_star, "relation": relation, "worth": n_star / size - 1.0}


def worth_in_images(cell: Cell, size: int, reference: list[tuple[int, Cell]], metric: str) -> dict | None:
    """The cell's worth in images on the reference line (module docstring), or None without a matched seed."""
    ours = runs_by_seed(cell.runs, metric)
    theirs = [runs_by_seed(ref.runs, metric) for _, ref in reference]
    seeds = sorted(set(ours).intersection(*theirs))
    if not seeds:
        return None
    sizes = [n for n, _ in reference]
    # (seeds, 1 + sizes): a seed's run of the cell and its reference runs, resampled together
    table = np.array([[seed_mean(ours[s], metric)] + [seed_mean(t[s], metric) for t in theirs] for s in seeds])
    low, high = bootstrap_interval(table, functools.partial(crossing, xs=sizes, log_x=True))
    return {"seeds": seeds, "point": _worth(*crossing(table, sizes, log_x=True), size), "low": _worth(*low, size),
            "high": _worth(*high, size)}


def by_size(spec: dict, cells: list[Cell], metric: str) -> tuple[dict, list[str]]:
    """The ``by_size`` section: per line its rows by size (cell, images, the metric's spread and 95% interval,
    and for lines other than the reference the paired gain and the worth in images), and per such line the
    change in gain from the smallest to the largest size. Cells without a finished run are left out with a
    note."""
    named = {c.values[CELL_KEY]: c for c in cells}
    notes = [f"by size: {name} has no finished run" for names in spec["lines"].values() for name in names
             if name not in named]

    def line(names: list[str]) -> list[tuple[int, Cell]]:
        return sorted((_size(named[n]), named[n]) for n in names if n in named)

    def scores(cell: Cell) -> list[float]:
        return [r.summary[metric] for r in cell.runs if r.summary.get(metric) is not None]

    reference = line(spec["lines"][spec["reference"]])
    ref_at = {size: cell for size, cell in reference}
    lines, trends = {}, {}
    for label, names in spec["lines"].items():
        rows = []
        for size, cell in line(names):
            row = {"cell": cell.values[CELL_KEY], "images": size, **spread(scores(cell)),
                   "ci": mean_interval(scores(cell))}
            if label != spec["reference"] and size in ref_at:
                row["gain"] = seed_differences(cell, ref_at[size], metric)
                row["worth"] = worth_in_images(cell, size, reference, metric) if len(reference) > 1 else None
            rows.append(row)
        lines[label] = rows
        gains = [r for r in rows if r.get("gain")]
        if label != spec["reference"] and len(gains) > 1:
            small, large = gains[0], gains[-1]
            trends[label] = {"small": small["images"], "large": large["images"],
                             **welch(small["gain"]["differences"], large["gain"]["differences"])}
    return {"reference": spec["reference"], "lines": lines, "trends": trends}, notes
