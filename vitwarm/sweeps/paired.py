"""Differences paired by seed: each cell minus a reference cell, seed by seed.

Seed s of two cells shares the image order and the image model's initial weights (vitwarm.seeds derives
both from the run's seed), so the per-seed difference removes most of the seed-to-seed spread that the
cells' own means carry. A reference is named by cell-key values, e.g. ``warmup.fraction=0,budget.epochs=4``,
and must pick exactly one cell.
"""

from __future__ import annotations

import re

import yaml

from vitwarm.sweeps.results import Cell, seed_stats

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


def _by_seed(cell: Cell, metric: str) -> dict[int, float]:
    return {
        int(r.config["seed"]): r.summary[metric]
        for r in cell.runs
        if r.summary.get(metric) is not None and r.config.get("seed") is not None
    }


def paired_differences(reference: Cell, cells: list[Cell], metric: str) -> list[dict]:
    """For every other cell sharing seeds with ``reference``: its values and the per-seed differences' stats.

    ``t`` is mean / sem (None when the differences do not vary or there is one pair).
    """
    ref = _by_seed(reference, metric)
    rows = []
    for cell in cells:
        if cell is reference:
            continue
        scores = _by_seed(cell, metric)
        seeds = sorted(set(scores) & set(ref))
        if not seeds:
            continue
        diffs = [scores[s] - ref[s] for s in seeds]
        stats = seed_stats(diffs)
        t = stats["mean"] / stats["sem"] if stats["sem"] else None
        rows.append({**cell.values, **stats, "t": t, "seeds": seeds, "differences": diffs})
    return rows


def significant(row: dict) -> bool:
    """The reading fixed for studies: the mean difference lies more than twice its standard error from zero."""
    return bool(row["sem"]) and abs(row["mean"]) > 2 * row["sem"]
