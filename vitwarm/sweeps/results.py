"""Read a sweep's runs and compute its numbers: cells with their stats over seeds, and data equivalence.

Runs are grouped into *cells* by their swept keys minus ``seed``; a cell's numbers are means over its seeds.
The data-equivalence estimate compares each warm-up cell with the baseline (``warmup.fraction`` = 0) runs of
the same context: it finds how many image samples S* the baseline needs, on its piecewise-linear
accuracy-vs-images curve, to reach the warm-up cell's accuracy, and reports the saved fraction
``1 - S_w / S*`` and the worth ``S* / S_w - 1``. docs/sweeps.md defines it with a worked example.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from vitwarm import rundir
from vitwarm.rundir import CONFIG, read_records, read_summary, run_state
from vitwarm.sweeps.grid import planned_identity, read_sweep

METRICS = ("top1", "top5", "test_top1", "test_top5")
FRACTION_KEY = "warmup.fraction"
# Keys that never define a cell: the seed is what cells average over, the rest are per-run bookkeeping.
_PER_RUN_KEYS = ("seed", "resume")
_PER_RUN_PREFIXES = ("run.",)
# Keys that set how many image samples a run sees: they are the x axis of the baseline curve.
_AMOUNT_KEYS = ("data.train_fraction",)
_AMOUNT_PREFIXES = ("budget.",)
# Keys that describe the warm-up itself (or what is taken from it); meaningless for a baseline run (fraction 0).
_TREATMENT_PREFIXES = ("warmup.", "procedural.", "transfer.")
_TREATMENT_KEYS = ("budget.regime",)


@dataclass
class RunResult:
    """One finished run: its flattened config, its summary and its evaluation records."""

    name: str
    config: dict
    summary: dict
    evals: list[dict]


@dataclass
class Cell:
    """The runs (seeds) sharing one setting of the cell keys."""

    values: dict
    runs: list[RunResult] = field(default_factory=list)


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _is_per_run(key: str) -> bool:
    return key in _PER_RUN_KEYS or key.startswith(_PER_RUN_PREFIXES)


def _is_amount(key: str) -> bool:
    return key in _AMOUNT_KEYS or (key.startswith(_AMOUNT_PREFIXES) and key not in _TREATMENT_KEYS)


def _is_treatment(key: str) -> bool:
    return key in _TREATMENT_KEYS or key.startswith(_TREATMENT_PREFIXES)


def _hashable(value):
    return str(value) if isinstance(value, (list, dict)) else value


def _sort_key(value):
    # Numbers sort numerically and before strings; None (key absent) first.
    if value is None:
        return (0, 0.0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, float(value), "")
    return (2, 0.0, str(value))


def read_evals(path: Path) -> tuple[list[dict], int]:
    """Evaluation records of a metrics.jsonl and the number of unreadable lines (e.g. cut by a crash)."""
    records, warnings = read_records(path)
    return [r for r in records if r.get("event") == "eval"], len(warnings)


@dataclass
class SweepResults:
    """Everything the report is built from."""

    cell_keys: list[str]
    runs: list[RunResult]
    unfinished: list[tuple[str, str]]
    notes: list[str]


def load_results(sweep_dir: str | Path) -> SweepResults:
    """Read every run of a sweep: those listed in sweep.json, plus any run directory found beside them.

    Cell keys are the swept keys of sweep.json minus ``seed``; without sweep.json, they are the config keys
    whose values differ between runs (minus seed and per-run bookkeeping such as ``run.dir``).
    """
    sweep_dir = Path(sweep_dir)
    spec = read_sweep(sweep_dir)
    listed = [r["name"] for r in spec["runs"]] if spec else []
    found = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and run_state(p) != "new")
    names = listed + [n for n in found if n not in listed]
    overrides = {r["name"]: r["overrides"] for r in spec["runs"]} if spec else {}
    states = {"interrupted": "interrupted", "new": "not started", "other config": "finished under another config"}

    runs, unfinished, notes, configs, trees = [], [], [], {}, {}
    for name in names:
        run_dir = sweep_dir / name
        # A listed run counts only when it finished under the config its sweep planned for it.
        state = run_state(run_dir, planned_identity(spec["base"], overrides[name]) if name in overrides else None)
        if (run_dir / CONFIG).exists():
            trees[name] = OmegaConf.to_container(OmegaConf.load(run_dir / CONFIG), resolve=True)
            configs[name] = _flatten(trees[name])
        else:
            configs[name] = {}
        if state != "finished":
            unfinished.append((name, states[state]))
            continue
        evals, bad = read_evals(run_dir / rundir.METRICS)
        if bad:
            notes.append(f"{name}: skipped {bad} unreadable line(s) of metrics.jsonl")
        summary = asdict(read_summary(run_dir))
        # Values typed by the trainer's config win; the sweep's override strings fill in keys it lacks.
        config = {**overrides.get(name, {}), **configs[name]}
        runs.append(RunResult(name=name, config=config, summary=summary, evals=evals))

    if spec:
        cell_keys = [k for k in spec["grids"] if not _is_per_run(k)]
    else:
        all_keys = sorted({k for c in configs.values() for k in c})
        cell_keys = [k for k in all_keys if not _is_per_run(k) and len({repr(c.get(k)) for c in configs.values()}) > 1]
    for run in runs:  # a swept mapping (procedural.params) of a run not in sweep.json: its resolved value
        for key in cell_keys:
            value = _select(trees.get(run.name, {}), key)
            if isinstance(value, dict) and key not in run.config:
                run.config[key] = json.dumps(value, sort_keys=True)
    return SweepResults(cell_keys=cell_keys, runs=runs, unfinished=unfinished, notes=notes)


def _select(tree: dict, key: str):
    """The node at dotted ``key`` of a nested dict, or None."""
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def group_cells(results: SweepResults) -> list[Cell]:
    """Group finished runs by the values of the cell keys, cells sorted by those values."""
    cells: dict[tuple, Cell] = {}
    for run in results.runs:
        values = {k: _hashable(run.config.get(k)) for k in results.cell_keys}
        cells.setdefault(tuple(values.values()), Cell(values=values)).runs.append(run)
    return [cells[k] for k in sorted(cells, key=lambda t: tuple(_sort_key(v) for v in t))]


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def seed_stats(scores: list[float]) -> dict:
    """n, mean, std (ddof 1) and standard error of the mean over seeds; spreads are None for n < 2."""
    n = len(scores)
    std = float(np.std(scores, ddof=1)) if n > 1 else None
    return {
        "n": n,
        "mean": float(np.mean(scores)) if n else None,
        "std": std,
        "sem": std / math.sqrt(n) if std is not None else None,
    }


def cell_stats(cell: Cell, metric: str) -> dict:
    """The cell's key values, its metric over seeds, and its mean samples, masked acc and wall time."""
    scores = [r.summary.get(metric) for r in cell.runs if r.summary.get(metric) is not None]
    return {
        **cell.values,
        "warmup_fraction": fraction_of(cell.runs[0].config),
        **seed_stats(scores),
        "image_samples": _mean([r.summary.get("image_samples") for r in cell.runs]),
        "warmup_samples": _mean([r.summary.get("warmup_samples") for r in cell.runs]),
        "masked_acc": _mean([r.summary.get("masked_acc") for r in cell.runs]),
        "wall_s": _mean([r.summary.get("wall_s") for r in cell.runs]),
        "runs": [r.name for r in cell.runs],
    }


def fraction_of(config: dict) -> float:
    """The run's warm-up fraction; a config without the key has no warm-up, and neither has the
    compute-matched control (its fraction only sizes the extra image steps): it is a baseline point."""
    if config.get("budget.regime") == "compute_matched":
        return 0.0
    return float(config.get(FRACTION_KEY) or 0.0)


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


def split_keys(cell_keys: list[str]) -> tuple[list[str], list[str]]:
    """(context keys, treatment keys): a warm-up cell is compared with the baseline of the same context;
    treatment keys (``warmup.*``, ``procedural.*``, ``transfer.*``, ``budget.regime``) tell warm-up variants apart."""
    context = [k for k in cell_keys if not _is_amount(k) and not _is_treatment(k)]
    treatment = [k for k in cell_keys if _is_treatment(k)]
    return context, treatment


def baseline_curves(results: SweepResults, metric: str) -> dict[tuple, list[dict]]:
    """Per context (cell keys that are neither amounts nor warm-up settings): the baseline's points.

    Baseline runs (fraction 0) are pooled across warm-up settings such as the grammar, which do not affect
    them, and grouped by their amount keys; each point has the mean image samples and the metric's
    :func:`seed_stats`. Runs without a metric or with no image samples (nothing to put on the x axis) are left
    out.
    """
    context_keys, _ = split_keys(results.cell_keys)
    amount_keys = [k for k in results.cell_keys if _is_amount(k)]
    groups: dict[tuple, dict[tuple, list[RunResult]]] = {}
    for run in results.runs:
        summary = run.summary
        if fraction_of(run.config) != 0 or summary.get(metric) is None or not summary.get("image_samples"):
            continue
        context = tuple(_hashable(run.config.get(k)) for k in context_keys)
        # The images seen as well: a compute-matched run has the budget keys of a baseline but more images.
        amount = tuple(_hashable(run.config.get(k)) for k in amount_keys) + (summary["image_samples"],)
        groups.setdefault(context, {}).setdefault(amount, []).append(run)
    curves = {}
    for context, by_amount in groups.items():
        points = [
            {
                "image_samples": _mean([r.summary["image_samples"] for r in runs]),
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
