"""Differences paired by seed: each cell minus a reference cell, seed by seed, on the seeds both have.

Seed s of two cells shares the image order and the image model's initial weights (vitwarm.seeds derives
both from the run's seed), so the per-seed difference removes most of the seed-to-seed spread that the
cells' own means carry. A reference is named by cell-key values, e.g. ``warmup.fraction=0,budget.epochs=4``,
and must pick exactly one cell.

The same run moves by tenths of a point on another CPU or kernel path, and a mimetic init could start from
another draw there (docs/comparisons.md), so every pair also says whether its two runs recorded the same
environment, source commit and machine in summary.json; the report flags the pairs that did not, or whose
commit or machine is not recorded (vitwarm.provenance). The statistics are vitwarm.analysis.stats'.
"""

from __future__ import annotations

import re

import numpy as np
import yaml

from vitwarm.analysis.results import CELL_KEY, Cell, RunResult
from vitwarm.analysis.stats import paired

# A selection is key=value pairs joined by commas; a comma inside a value (a mapping's) is not a separator.
_PAIR_SPLIT = re.compile(r",(?=\s*[\w.]+=)")


def parse_selection(text: str) -> dict[str, str]:
    """``"a.b=1,c=x"`` -> ``{"a.b": "1", "c": "x"}``; a part without ``=`` is refused, naming it."""
    selection = {}
    for part in _PAIR_SPLIT.split(text):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--paired-to {text!r}: {part!r} is not KEY=VALUE (e.g. warmup.fraction=0)")
        selection[key.strip()] = value.strip()
    return selection


def _parsed(text: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _matches(cell_value, wanted: str) -> bool:
    # "0" selects 0.0, "false" selects False, "{k: 32}" selects the mapping however the run wrote it: both
    # sides are read as YAML (JSON and the sweep's override strings are YAML too).
    value = _parsed(cell_value) if isinstance(cell_value, str) else cell_value
    return value == _parsed(wanted) or str(cell_value) == wanted


def select_cell(text: str, cells: list[Cell], cell_keys: list[str]) -> Cell:
    """The one cell whose values match the selection ``text``; any other outcome is refused in one line."""
    selection = parse_selection(text)
    for key in selection:
        if key not in cell_keys:
            raise ValueError(f"--paired-to {text!r}: {key!r} is not a cell key (cell keys: {', '.join(cell_keys)})")
    found = [c for c in cells if all(_matches(c.values[k], v) for k, v in selection.items())]
    if len(found) == 1:
        return found[0]
    if not found:
        choices = "; ".join(f"{k}: {', '.join(sorted({str(c.values[k]) for c in cells}))}" for k in selection)
        raise ValueError(f"--paired-to {text!r}: no cell has these values (values present: {choices})")
    differ = [k for k in cell_keys if k not in selection and len({str(c.values[k]) for c in found}) > 1]
    raise ValueError(f"--paired-to {text!r}: {len(found)} cells match; add {' or '.join(differ)} to pick one")


def runs_by_seed(runs: list[RunResult], metric: str) -> dict[int, list[RunResult]]:
    """The runs with a ``metric`` and a seed, by seed (several where baselines are pooled across cells)."""
    found: dict[int, list[RunResult]] = {}
    for run in runs:
        if run.summary.get(metric) is not None and run.config.get("seed") is not None:
            found.setdefault(int(run.config["seed"]), []).append(run)
    return found


def seed_mean(runs: list[RunResult], metric: str) -> float:
    return float(np.mean([r.summary[metric] for r in runs]))


# The provenance fields (vitwarm.provenance) without which two runs cannot be known to match.
PROVENANCE = ("source", "machine")


def environment_gap(runs: list[RunResult]) -> dict:
    """What is known of where ``runs`` ran (summary.json's ``environment``, vitwarm.run.rundir.environment):
    ``differ``, the environment keys whose values differ among them (library versions, CPU, the package
    source, the machine's fingerprint...), and ``unknown``, the provenance fields some run does not record
    (runs of earlier versions have no commit and no machine fingerprint, or no environment at all). A source
    with a modified tree is unknown too: its commit does not say what ran."""
    envs = [r.summary.get("environment") or {} for r in runs]
    unknown = sorted({k for e in envs for k in PROVENANCE if not e.get(k)})
    if any(e.get("source") and (e["source"].get("commit") is None or e["source"].get("modified")) for e in envs):
        unknown = sorted(set(unknown) | {"source"})
    recorded = [e for e in envs if e]
    keys = set().union(*recorded) if recorded else set()
    differ = sorted(k for k in keys if len({repr(e.get(k)) for e in recorded}) > 1)
    return {"differ": differ, "unknown": unknown}


def machines(gaps: dict[int, dict]) -> dict:
    """Per-seed gaps (seed -> :func:`environment_gap`) summed up for a table row: ``same`` (True only when every
    pair is known to have run the same source on the same machine), the seeds whose runs differ and the keys
    that differ, and the seeds with unrecorded provenance and the fields missing."""
    differ = {s: g["differ"] for s, g in gaps.items() if g["differ"]}
    unknown = {s: g["unknown"] for s, g in gaps.items() if g["unknown"]}
    return {"same": not differ and not unknown, "differ_seeds": sorted(differ),
            "differ_keys": sorted({k for keys in differ.values() for k in keys}), "unknown_seeds": sorted(unknown),
            "unknown_keys": sorted({k for keys in unknown.values() for k in keys})}


def seed_list(seeds: list[int]) -> str:
    """``[0, 1, 2, 4]`` -> ``"0–2, 4"``: the seeds a comparison used, for tables."""
    parts, start = [], None
    for i, seed in enumerate(seeds):
        start = seed if start is None else start
        if i + 1 == len(seeds) or seeds[i + 1] != seed + 1:
            parts.append(str(seed) if seed == start else f"{start}–{seed}")
            start = None
    return ", ".join(parts)


def seed_differences(cell: Cell, reference: Cell, metric: str) -> dict | None:
    """``cell - reference`` seed by seed on the seeds both have: ``seeds``, ``differences`` and their paired
    statistics (vitwarm.analysis.stats.paired: mean, se, n, 95% interval, p, shown); None when they share no
    seed."""
    ours, theirs = runs_by_seed(cell.runs, metric), runs_by_seed(reference.runs, metric)
    seeds = sorted(set(ours) & set(theirs))
    if not seeds:
        return None
    diffs = [seed_mean(ours[s], metric) - seed_mean(theirs[s], metric) for s in seeds]
    return {**paired(diffs), "seeds": seeds, "differences": diffs}


def paired_differences(reference: Cell, cells: list[Cell], metric: str) -> list[dict]:
    """For every other cell sharing seeds with ``reference``: its values, the paired comparison on the seeds both
    cells have (:func:`seed_differences`), and what is known of where each pair ran (:func:`machines`)."""
    ref = runs_by_seed(reference.runs, metric)
    rows = []
    for cell in cells:
        if cell is reference or not (pair := seed_differences(cell, reference, metric)):
            continue
        runs = runs_by_seed(cell.runs, metric)
        gaps = {s: environment_gap(runs[s] + ref[s]) for s in pair["seeds"]}
        rows.append({**cell.values, **pair, "machines": machines(gaps)})
    return rows


def named_pairs(pairs: list[tuple[str, str]], cells: list[Cell]) -> tuple[list[tuple], list[str]]:
    """A study's comparisons (cell, reference), by reference: ``(selection, reference cell, compared cells)``
    for each reference, and a note for each pair left out because a side has no finished run yet."""
    named = {c.values.get(CELL_KEY): c for c in cells}
    found, notes = [], []
    for a, b in pairs:
        if a not in named or b not in named:
            notes.append(f"{a} - {b}: left out, {a if a not in named else b} has no finished run")
    for reference in dict.fromkeys(b for a, b in pairs if a in named and b in named):
        compared = [named[a] for a, b in pairs if b == reference and a in named]
        found.append((f"{CELL_KEY}={reference}", named[reference], compared))
    return found, notes
