"""One-off: move the archived runs of docs/ into results/<study>/, named after the cells of studies/<study>.yaml.

    python tools/migrate_archives.py            # writes results/first, results/growth, results/study2

Each archived run is given to the cell of its study file whose planned config it ran (its summary.json's
identity: every key, the paths to other runs' folders, which change names here, only as there or not:
a control's matched run, a composed transfer's sources), and copied
to results/<study>/runs/<cell>/s<seed>/ as overrides.yaml (what the study file would run it with),
summary.json (with schema_version) and metrics.jsonl. Every copy is then read back and checked against its
original (the same summary, the same metrics lines); only then is the index written. A run no cell claims,
or two runs of one cell and seed, stop the migration with the run's folder named.

The first study's same-machine re-runs (docs/comparisons/reruns) take the place of the runs they repeat;
those go to results/first/superseded/<cell>/s<seed>/, so both sets of docs/comparisons/ stay rebuildable.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from vitwarm.run.rundir import METRICS, SUMMARY, changed_keys, write_overrides
from vitwarm.sweeps.archive import RUNS, add_run, index_entry, versioned_summary, write_index
from vitwarm.sweeps.grid import planned_identity
from vitwarm.sweeps.stages import run_name, run_overrides
from vitwarm.sweeps.study import read_study

SUPERSEDED = "superseded"
# study -> its archived run folders, later sets replacing earlier runs of the same cell and seed
SOURCES = {"first": ["docs/comparisons/runs", "docs/comparisons/reruns"], "growth": ["docs/growth/runs"],
           "study2": ["docs/study2/runs"]}
PATH_KEYS = ("budget.matched_to", "transfer.sources")  # name other runs' folders: old names, new names


def _without_paths(identity: dict) -> dict:
    """``identity`` with each path to another run's folder as the word "path" (its name changes here)."""
    return {k: "path" if k.startswith(PATH_KEYS) and isinstance(v, str) and v != "None" else v
            for k, v in identity.items()}


def planned(study) -> dict[tuple[str, int], dict]:
    """(cell, seed) -> the identity its run would have, without the path keys."""
    return {(cell, seed): _without_paths(planned_identity(study.base, run_overrides(study, cell, seed, {}),
                                                          study.out / run_name(cell, seed)))
            for cell in study.cells for seed in study.cells[cell].seeds}


def owner(run_dir: Path, plans: dict) -> tuple[str, int]:
    recorded = _without_paths(json.loads((run_dir / SUMMARY).read_text())["identity"])
    found = [key for key, identity in plans.items() if not changed_keys(recorded, identity)]
    if len(found) != 1:
        sys.exit(f"migrate: {run_dir}: {len(found)} cells of the study ran this config ({found})")
    return found[0]


def copy_run(study, cell: str, seed: int, source: Path, dest: Path) -> None:
    dest.mkdir(parents=True)
    write_overrides(dest, run_overrides(study, cell, seed, {}))
    (dest / SUMMARY).write_text(versioned_summary((source / SUMMARY).read_text()) + "\n")
    shutil.copyfile(source / METRICS, dest / METRICS)


def check_copy(source: Path, dest: Path) -> None:
    new = json.loads((dest / SUMMARY).read_text())
    if new.pop("schema_version") != 1 or new != json.loads((source / SUMMARY).read_text()):
        sys.exit(f"migrate: {dest / SUMMARY} differs from {source / SUMMARY}")
    if (dest / METRICS).read_bytes() != (source / METRICS).read_bytes():
        sys.exit(f"migrate: {dest / METRICS} differs from {source / METRICS}")


def migrate(name: str) -> int:
    study = read_study(f"studies/{name}.yaml")
    plans = planned(study)
    chosen: dict[tuple[str, int], Path] = {}
    superseded: dict[tuple[str, int], Path] = {}
    for folder in SOURCES[name]:
        found: dict[tuple[str, int], Path] = {}
        for run_dir in sorted(Path(folder).iterdir()):
            key = owner(run_dir, plans)
            if key in found:
                sys.exit(f"migrate: {run_dir} and {found[key]} are both {run_name(*key)}")
            found[key] = run_dir
        superseded |= {key: chosen[key] for key in found if key in chosen}
        chosen |= found
    if study.archive.exists():
        sys.exit(f"migrate: {study.archive} exists; remove it to migrate again")
    index = {}
    for (cell, seed), source in sorted(chosen.items()):
        copy_run(study, cell, seed, source, study.archive / RUNS / run_name(cell, seed))
    for (cell, seed), source in sorted(superseded.items()):
        copy_run(study, cell, seed, source, study.archive / SUPERSEDED / run_name(cell, seed))
    for (cell, seed), source in [*chosen.items(), *superseded.items()]:
        where = RUNS if (cell, seed) not in superseded or superseded[cell, seed] != source else SUPERSEDED
        check_copy(source, study.archive / where / run_name(cell, seed))
    for cell in study.cells:  # the index in the study's order, each cell's seeds in order
        entry = index[cell] = index_entry(study.stage_of[cell], "train", study.overrides(cell, {}))
        for seed in sorted(s for c, s in chosen if c == cell):
            add_run(entry, seed, json.loads((chosen[cell, seed] / SUMMARY).read_text()))
        if any(c == cell for c, _ in superseded):
            entry["superseded_seeds"] = sorted(s for c, s in superseded if c == cell)
    write_index(study, index)
    print(f"{name}: {len(chosen)} runs of {len(index)} cells ({len(superseded)} superseded) in {study.archive}, "
          "each the same as its original")
    return len(chosen)


if __name__ == "__main__":
    for study_name in SOURCES:
        migrate(study_name)
