"""The directory name of each run of a sweep.

A run is named after the grid values that vary between the sweep's runs, in the order the grids were given,
each after the last part of its key (the shortest tail of the key that no other grid key shares), joined by
``__``: ``warmup.fraction=0.05`` and ``seed=1`` give ``fraction=0.05__seed=1``; a grid of one value names no
run. A value is shown without YAML's brackets, quotes and spaces, its commas as ``+`` (``{k: 32}`` -> ``k-32``,
``[attn, mlp]`` -> ``attn+mlp``); any other character but letters, digits and ``_ . + -`` becomes ``-``
(``k_dyck:3+ww:1`` -> ``k_dyck-3+ww-1``); a value longer than ``_MAX_VALUE`` characters is cut and tagged
with a CRC-32 of the whole; an empty one is ``none``. When a name would be longer than ``MAX_NAME``
characters, the sweep's runs are numbered instead (``run01``, ``run02``, ...). The run's full overrides are in
its ``overrides.yaml`` (vitwarm.run.rundir): that file, not the name, is what the report reads.

A sweep planned again finds each run in the directory whose overrides file records its overrides, whatever
it was named then (a grid that gained a value changes which keys vary). Two runs whose names come out alike
are told apart on disk: a new run takes the first of NAME, NAME-2, NAME-3, ... that no earlier run of the
plan took and that is free (no directory, or one holding neither a config nor another run's overrides).
"""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

from vitwarm.run.rundir import CONFIG, read_overrides

# A value's YAML punctuation dropped from its name, and its commas (list items, mapping entries) as '+'.
_DROPPED = str.maketrans({c: None for c in "{}[]'\" "} | {",": "+"})
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+\-]+")
_MAX_VALUE = 24  # characters of a value in a name, before it is cut and hashed
MAX_NAME = 48  # characters of a run's name; a sweep with a longer one numbers its runs
_LABEL_MAX_VALUE = 40  # characters of a value in a plot's labels (vitwarm.analysis.plots)


def short_value(value: str, limit: int = _LABEL_MAX_VALUE) -> str:
    """``value``, or for one longer than ``limit`` its first ``limit // 2`` characters and a CRC-32 of the whole."""
    if len(value) <= limit:
        return value
    return f"{value[:limit // 2]}-h{zlib.crc32(value.encode()):08x}"


def key_labels(keys: list[str]) -> dict[str, str]:
    """Each key's label in names: its shortest tail of dotted parts that is the tail of no other key."""
    labels = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            label = ".".join(parts[-n:])
            if not any(other == label or other.endswith(f".{label}") for other in keys if other != key):
                break
        labels[key] = label
    return labels


def name_value(value: str) -> str:
    """How ``value`` appears in a run name (see the module docstring)."""
    shown = _UNSAFE.sub("-", value.translate(_DROPPED)) or "none"
    if len(shown) <= _MAX_VALUE:
        return shown
    return f"{shown[:_MAX_VALUE // 2]}-h{zlib.crc32(value.encode()):08x}"


def run_name(grid_values: dict[str, str]) -> str:
    """The name of one grid point before collisions are resolved, e.g. ``fraction=0.01__seed=1`` (``run``
    without grids)."""
    labels = key_labels(list(grid_values))
    return "__".join(f"{labels[k]}={name_value(v)}" for k, v in grid_values.items()) or "run"


def _free_for(run_dir: Path, overrides: dict[str, str]) -> bool:
    """Whether ``run_dir`` may hold the run of ``overrides``: absent, its own, or holding no run yet."""
    recorded = read_overrides(run_dir)
    if recorded is not None:
        return recorded == overrides
    return not (run_dir / CONFIG).exists()


def _recorded(out: Path) -> dict[str, str]:
    """The run directories under ``out`` by the overrides they record (frozen as sorted JSON)."""
    found = {}
    if out.is_dir():
        for run_dir in sorted(p for p in out.iterdir() if p.is_dir()):
            own = read_overrides(run_dir)
            if own is not None:
                found.setdefault(json.dumps(own, sort_keys=True), run_dir.name)
    return found


def assign_names(out: Path, points: list[dict[str, str]], overrides: list[dict[str, str]]) -> list[str]:
    """The directory name under ``out`` of each grid point (``overrides``: each run's full overrides)."""
    varying = [k for k in (points[0] if points else {}) if len({p[k] for p in points}) > 1]
    bases = [run_name({k: p[k] for k in varying}) for p in points]
    if any(len(b) > MAX_NAME for b in bases):  # the overrides file says what a numbered run is
        bases = [f"run{i:0{len(str(len(points)))}d}" for i in range(1, len(points) + 1)]
    recorded = _recorded(out)
    names: list[str] = []
    for own, base in zip(overrides, bases):
        found = recorded.get(json.dumps(own, sort_keys=True))
        if found is not None and found not in names:  # planned before, under whatever name it had then
            names.append(found)
            continue
        name, n = base, 1
        while name in names or not _free_for(out / name, own):
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names
