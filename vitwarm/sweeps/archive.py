"""A study's archive: the small, script-readable files of its finished runs, and an index of its cells.

    ARCHIVE/
      study.yaml                   the study file the runs were made from
      index.json                   cell -> stage, overrides, seeds, n, machines and commits of its runs
      runs/<cell>/s<seed>/         overrides.yaml, summary.json, metrics.jsonl (a transition run: transition.json)

An archived summary.json carries ``schema_version`` (``SCHEMA_VERSION``: the fields of vitwarm.run.rundir's
Summary as of this version), so a script reading archives of several versions can tell them apart.

The study's own folder is written out of every file (a control's matched run is named relative to the
study), so an archive holds no path of the machine that made it. Archiving again adds the runs finished
since and rewrites the index.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from vitwarm.atomic import atomic_write_text
from vitwarm.run.rundir import METRICS, OVERRIDES, SCHEMA_VERSION, SUMMARY
from vitwarm.sweeps import transition
from vitwarm.sweeps.stages import choices_before, plan_stage
from vitwarm.sweeps.study import Study

RUNS = "runs"
INDEX = "index.json"
FILES = {"train": (OVERRIDES, SUMMARY, METRICS), "transition": (OVERRIDES, transition.RESULT)}


def _provenance(result: dict) -> tuple[str | None, str | None]:
    env = result.get("environment") or {}
    return (env.get("machine") or {}).get("fingerprint"), (env.get("source") or {}).get("commit")


def versioned_summary(text: str) -> str:
    """An archived summary.json's text: ``text`` with ``schema_version`` first."""
    return json.dumps({"schema_version": SCHEMA_VERSION} | json.loads(text), indent=1)


def index_entry(stage: str, kind: str, overrides: dict[str, str]) -> dict:
    return {"stage": stage, "kind": kind, "overrides": overrides, "seeds": [], "machines": [], "commits": []}


def add_run(entry: dict, seed: int, result: dict) -> None:
    """Count a finished run (its summary, or its first transition row) in its cell's index entry."""
    machine, commit = _provenance(result)
    entry["seeds"].append(seed)
    entry["machines"] = sorted({*entry["machines"], machine or "not recorded"})
    entry["commits"] = sorted({*entry["commits"], commit or "not recorded"})
    entry["n"] = len(entry["seeds"])


def write_index(study: Study, index: dict) -> None:
    study.archive.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(study.path, study.archive / "study.yaml")
    atomic_write_text(study.archive / INDEX, json.dumps(index, indent=1) + "\n")


def archive_study(study: Study, echo=print) -> Path:
    """Copy every finished run of the study into its archive and write the index; the archive's folder."""
    index, copied = {}, 0
    for stage in study.stages:
        choices = choices_before(study, stage)
        try:
            sweeps = plan_stage(study, stage, choices)
        except ValueError:  # its cells wait for an earlier stage's choice: nothing of it has run
            continue
        for sweep in sweeps:
            for run in sweep.runs:
                cell = run.name.split("/")[0]
                entry = index.setdefault(cell, index_entry(stage.name, stage.kind, study.overrides(cell, choices)))
                entry.setdefault("n", 0)
                if sweep.state(run) != "finished":
                    continue
                source, dest = sweep.run_dir(run), study.archive / RUNS / run.name
                dest.mkdir(parents=True, exist_ok=True)
                for name in FILES[stage.kind]:
                    text = (source / name).read_text().replace(f"{study.out}/", "")
                    atomic_write_text(dest / name, versioned_summary(text) if name == SUMMARY else text)
                result = json.loads((dest / FILES[stage.kind][1]).read_text())
                add_run(entry, int(run.overrides["seed"]), result[0] if isinstance(result, list) else result)
                copied += 1
    write_index(study, index)
    echo(f"archived {copied} finished run(s) of {len(index)} cell(s) in {study.archive}")
    return study.archive
