"""The directory name of each run of a sweep.

A run is named after its grid values in the order the grids were given, each after the last part of its key
(the shortest tail of the key that no other grid key shares), joined by ``__`` (a comma would split a
``--grid`` value that names a run): ``warmup.fraction=0.05`` and ``seed=1`` give ``fraction=0.05__seed=1``.
A value is shown without YAML's brackets, quotes and spaces, its commas as ``+`` (``{k: 32}`` -> ``k-32``,
``[attn, mlp]`` -> ``attn+mlp``); any other character but letters, digits and ``_ . + -`` becomes ``-``
(``k_dyck:3+ww:1`` -> ``k_dyck-3+ww-1``); a value longer than ``_MAX_VALUE`` characters is cut and tagged
with a CRC-32 of the whole; an empty one is ``none``. The run's full overrides are in its
``overrides.json`` (vitwarm.run.rundir): that file, not the name, is what the report reads.

Two runs whose names come out alike (values that differ only in what the name leaves out) are told apart on
disk: a run takes the first of NAME, NAME-2, NAME-3, ... that no earlier run of the plan took and that is
free (no directory, or one holding neither a config nor another run's overrides.json). A sweep planned again
finds each run under the name it was given, whatever else the sweep directory holds.

Sweeps planned by earlier versions named runs after every key and value in full
(``warmup.fraction=0.05__seed=1``); a run whose directory of that name exists is found there, so such a
sweep resumes, skips its finished runs and reports as before.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

from vitwarm.run.rundir import CONFIG, read_overrides

# A value's YAML punctuation dropped from its name, and its commas (list items, mapping entries) as '+'.
_DROPPED = str.maketrans({c: None for c in "{}[]'\" "} | {",": "+"})
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+\-]+")
_MAX_VALUE = 24  # characters of a value in a name, before it is cut and hashed

# Names of earlier versions: every key=value in full, joined by "__"; other characters became "-".
_LEGACY_UNSAFE = re.compile(r"[^A-Za-z0-9_.=+\-]")
_LEGACY_MAX_VALUE = 40


def short_value(value: str, limit: int = _LEGACY_MAX_VALUE) -> str:
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


def legacy_run_name(grid_values: dict[str, str]) -> str:
    """The name earlier versions gave a grid point, e.g. ``warmup.fraction=0.01__seed=1``."""
    if not grid_values:
        return "run"
    return "__".join(_LEGACY_UNSAFE.sub("-", f"{k}={short_value(v)}") for k, v in grid_values.items())


def _free_for(run_dir: Path, overrides: dict[str, str]) -> bool:
    """Whether ``run_dir`` may hold the run of ``overrides``: absent, its own, or holding no run yet."""
    recorded = read_overrides(run_dir)
    if recorded is not None:
        return recorded == overrides
    return not (run_dir / CONFIG).exists()


def assign_names(out: Path, points: list[dict[str, str]], overrides: list[dict[str, str]]) -> list[str]:
    """The directory name under ``out`` of each grid point (``overrides``: each run's full overrides)."""
    names: list[str] = []
    for grid_values, own in zip(points, overrides):
        legacy = legacy_run_name(grid_values)
        # A long name of many keys may exceed the file system's 255 bytes: then no earlier version made it.
        if grid_values and len(legacy.encode()) <= 255 and (out / legacy).is_dir():
            names.append(legacy)
            continue
        base = run_name(grid_values)
        if len(base.encode()) > 250:  # 255 bytes per file name, less room for a "-N" suffix
            raise ValueError(f"the run name {base[:60]}... is {len(base.encode())} bytes, more than a file name can "
                             "hold (250): sweep fewer keys, or shorter values")
        name, n = base, 1
        while name in names or not _free_for(out / name, own):
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names
