"""Studies: a study file checked before any run, its rules, and a tiny study run, killed, resumed, reported."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vitwarm.cli.study import main as study_main
from vitwarm.run.rundir import read_overrides
from vitwarm.sweeps.grid import planned_identity
from vitwarm.sweeps.rules import CellResults, cheapest_plateau, converged

from helpers import ENV, ROOT, TINY, Mistake, call_main, check_mistake, kill_group, write_finished

GOOD = """
base: {tiny}
out: {tmp}/run
seeds: [0, 1]
cells:
  none: {set: {warmup.fraction: 0}}
  W: {set: {warmup.fraction: 0.2}}
  C: {extends: W, matched_to: W}
compare: [[W, none]]
"""


def study(name: str, text: str, names: str, *args: str, status: int = 1, append: str = "") -> Mistake:
    """A row: GOOD with ``text`` replacing part of it (``old => new``) or appended, refused naming ``names``."""
    old, sep, new = text.partition(" => ")
    body = (GOOD.replace(old, new) if sep else GOOD + text) + append
    return Mistake(name, ["-m", "vitwarm.cli.study", "{tmp}/s.yaml", *args], names, status=status,
                   files={"s.yaml": body.replace("{tiny}", str(TINY))})


MISTAKES = [
    study("unknown top key", "sedes: [0]\n", "the file.sedes: unknown key"),
    study("unknown cell key", "C: {extends: W, matched_to: W} => C: {extend: W, matched_to: W}", "cells.C.extend"),
    study("unknown cell in matched_to", "matched_to: W} => matched_to: W3}", "cells.C.matched_to: unknown cell 'W3'"),
    study("cycle of extends", "W: {set: {warmup.fraction: 0.2}} => W: {extends: C}", "cells.W.extends: a cycle"),
    study("seeds not a list of integers", "seeds: [0, 1] => seeds: [0, one]", "seeds: [0, 'one'] is not a list"),
    study("a seed twice", "seeds: [0, 1] => seeds: [1, 1]", "lists a seed more than once"),
    study("a control's seed without a matched run", "matched_to: W} => matched_to: W, seeds: [0, 2]}",
          "seed(s) [2] have no run of W"),
    study("a config key the trainer does not know", "fraction: 0.2} => fractio: 0.2}", "cells.W: unknown config key"),
    study("the study sets seed itself", "fraction: 0} => fraction: 0, seed: 3}", "cells.none.set.seed"),
    study("unknown cell in compare", "[[W, none]] => [[W, nothing]]", "compare[0]: unknown cell 'nothing'"),
    study("unknown rule", "stages:\n  - {name: a, cells: [none, W], choose: {rule: best}}\n"
          "  - {name: b, cells: [C]}\n", "stages.a.choose.rule: 'best' is no rule"),
    study("a rule's unknown parameter", "stages:\n  - {name: a, cells: [none, W], choose: {rule: converged, n: 2}}\n"
          "  - {name: b, cells: [C]}\n", "stages.a.choose"),
    study("from a later stage", "W: {set: {warmup.fraction: 0.2}} => W: {from: b.1}",
          "cells.W.from: 'b' is no earlier stage",
          append="stages:\n  - {name: a, cells: [none, W]}\n  - {name: b, cells: [C], choose: {rule: converged}}\n"),
    study("a cell in no stage", "stages:\n  - {name: a, cells: [none, W]}\n", "cells.C: the cell is in no stage"),
    study("by_size's reference is none of its lines", "by_size: {reference: base, lines: {none: [none], W: [W]}}\n",
          "by_size: needs lines of cell names (one per size) and a reference that is one of them (lines: none, W)"),
    study("by_size names an unknown cell", "by_size: {reference: none, lines: {none: [none], W: [W2]}}\n",
          "by_size.lines.W: 'W2' is no cell"),
    study("unknown stage asked for", "", "'main' is no stage", "main", status=2),
]


@pytest.mark.parametrize("row", MISTAKES, ids=str)
def test_a_study_file_with_a_mistake_is_refused_before_any_run_in_one_line(row, tmp_path, fmnist_shards):
    check_mistake(row, tmp_path, fmnist_shards)


def test_rules_choose_from_results():
    def cell(budget, *scores):
        return CellResults({"budget.epochs": budget, "data.train_fraction": "0.1"}, [{"top1": s} for s in scores])
    # Doubling 2 -> 4 epochs gains 3 points, 4 -> 8 gains 0.2: 4 epochs is where it has converged.
    cells = {"e2": cell("2", 60, 62), "e4": cell("4", 64, 64), "e8": cell("8", 64, 64.4)}
    assert converged(cells, gain=0.5) == {"all": "e4"}
    assert converged(cells, gain=0.1, group="data.train_fraction") == {"0.1": "e8"}  # never below: the largest

    def rows(*plateaus):
        return CellResults({}, [{"plateau_step": p, "plateau_flops": p and p * 1e9} for p in plateaus])
    # b8 is cheapest in one seed but never reached its plateau in the other: not a choice.
    warmups = {"b8": rows(10, None), "b16": rows(50, 70), "b32": rows(40, 60)}
    assert cheapest_plateau(warmups, n=2) == {"1": "b32", "2": "b16"}


PILOT = """
base: {tiny}
out: {tmp}/runs
seeds: [0, 1]
cells:
  e1: {{set: {{budget.epochs: 1}}, seeds: [0]}}
  e2: {{set: {{budget.epochs: 2}}, seeds: [0]}}
  e4: {{set: {{budget.epochs: 4}}, seeds: [0]}}
  none: {{from: pilot.{label}, set: {{warmup.fraction: 0}}}}
stages:
  - {{name: pilot, cells: [e1, e2, e4], choose: {{rule: converged, gain: 0.5}}}}
  - {{name: main, cells: [none]}}
"""


def test_a_stage_takes_its_cells_settings_from_an_earlier_stages_choice(tmp_path, capsys):
    path = tmp_path / "pilot.yaml"
    path.write_text(PILOT.format(tiny=TINY, tmp=tmp_path, label="all"))
    assert study_main([str(path), "main", "--launcher", "print"]) == 1
    assert "cell none takes pilot.all, chosen when stage pilot has finished" in capsys.readouterr().err
    # The pilot's runs finished (summaries written, not trained): 1 -> 2 epochs gains 3 points, 2 -> 4 gains 0.2.
    for cell, top1 in (("e1", 60.0), ("e2", 63.0), ("e4", 63.2)):
        run_dir = tmp_path / "runs" / cell / "s0"
        epochs = cell[1:]
        write_finished(run_dir, planned_identity(str(TINY), {"budget.epochs": epochs, "seed": "0"}, run_dir), top1=top1)
    assert study_main([str(path), "main", "--launcher", "print"]) == 0
    printed = capsys.readouterr().out
    assert "stage pilot chose: all = e2" in printed
    commands = [line for line in printed.splitlines() if "vitwarm.train" in line]
    assert len(commands) == 2 and all("budget.epochs=2 warmup.fraction=0" in c for c in commands)
    assert read_overrides(tmp_path / "runs" / "none" / "s1") == {"budget.epochs": "2", "warmup.fraction": "0",
                                                                 "seed": "1"}
    # A label the rule did not give is refused in one line, naming the labels it gave.
    path.write_text(PILOT.format(tiny=TINY, tmp=tmp_path, label="0.1"))
    assert study_main([str(path), "--dry-run"]) == 1
    assert "stage pilot's rule chose only all" in capsys.readouterr().err


TINY_STUDY = """
base: {tiny}
out: {out}
archive: {archive}
seeds: [0, 1]
set: {{data.source: {shards}, eval.every_epochs: 1, log.every_steps: 2}}
launch: {{entry: {python} -m vitwarm.train}}
cells:
  e4: {{set: {{warmup.fraction: 0, budget.epochs: 0.125}}, seeds: [0]}}   # 4 image steps
  e8: {{set: {{warmup.fraction: 0, budget.epochs: 0.25}}, seeds: [0]}}
  probe: {{set: {{warmup.batch_size: 8}}, seeds: [0]}}
  none: {{from: pilot.all}}
  W: {{extends: none, set: {{warmup.fraction: 0.5}}}}
  C: {{extends: W, matched_to: W}}
stages:
  - {{name: pilot, cells: [e4, e8], choose: {{rule: converged, gain: 100}}}}
  - {{name: warmups, kind: transition, max_steps: 8, cells: [probe]}}
  - {{name: main, cells: [none, W, C]}}
compare: [[W, none], [C, none], [W, C]]
"""


def commands_run(run_dir: Path) -> int:
    """How many times the launcher started the run (launch.log: one '# DATE COMMAND' line per start)."""
    log = run_dir / "launch.log"
    return sum(line.startswith("# ") for line in log.read_text().splitlines()) if log.exists() else 0


@pytest.mark.slow
def test_a_tiny_study_runs_resumes_after_a_kill_reports_and_archives(tmp_path, fmnist_shards):
    out, archive = tmp_path / "runs", tmp_path / "results"
    path = tmp_path / "tiny_study.yaml"
    path.write_text(TINY_STUDY.format(tiny=TINY, out=out, archive=archive, shards=fmnist_shards, python=sys.executable))
    command = [sys.executable, "-m", "vitwarm.cli.study", str(path), "--parallel", "2"]
    env = ENV | {"PYTHONPATH": str(ROOT)}

    # Killed (the launcher and its runs, SIGKILL) once a run of the main stage has finished and another started.
    main_runs = [out / cell / f"s{seed}" for cell in ("none", "W", "C") for seed in (0, 1)]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 600
    while process.poll() is None and not (
            any((r / "summary.json").exists() for r in main_runs)
            and any((r / "config.yaml").exists() and not (r / "summary.json").exists() for r in main_runs)):
        assert time.monotonic() < deadline, "the study never reached its main stage"
        time.sleep(0.05)
    kill_group(process)  # every trainer of the group has stopped before the run directories are read
    finished = [r for r in main_runs if (r / "summary.json").exists()]
    killed = [r for r in main_runs if commands_run(r) and not (r / "summary.json").exists()]
    assert finished and killed

    # The same command again: what finished is skipped, the rest runs, the study completes.
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "stage pilot chose: all = e4" in result.stdout  # converged: doubling never gains 100 points
    assert "stage main: 6 done, 0 running, 0 left" in result.stdout
    for run in finished + [out / "e4" / "s0", out / "e8" / "s0"]:
        assert commands_run(run) == 1 and f"skip      {run.parent.name}/{run.name} (finished)" in result.stdout
    for run in killed:
        assert commands_run(run) == 2 and (run / "summary.json").exists()
    assert json.loads((out / "probe" / "s0" / "transition.json").read_text())[0]["steps_run"] <= 8

    # The chosen budget reached the cells that take it; a control is matched to its own seed's warm-up run.
    c1 = (out / "C" / "s1" / "overrides.yaml").read_text()
    assert "budget.epochs: '0.125'" in c1 and "budget.matched_to: ${run.dir}/../../W/s1" in c1
    assert json.loads((out / "C" / "s1" / "summary.json").read_text())["image_samples"] > \
        json.loads((out / "none" / "s1" / "summary.json").read_text())["image_samples"]

    for args in (["report"], ["archive"], ["report", "--archived"]):  # in this process: no run starts
        status, output = call_main(study_main, [str(path), *args])
        assert status == 0, output[-3000:]
    live, archived = (json.loads((d / "report" / "report.json").read_text()) for d in (out, archive))
    assert [(c["cell"], c["mean"]) for c in live["cells"]] == [(c["cell"], c["mean"]) for c in archived["cells"]]
    blocks = {b["selection"]: [(r["cell"], r["seeds"]) for r in b["rows"]] for b in archived["paired"]}
    assert blocks == {"cell=none": [("W", [0, 1]), ("C", [0, 1])], "cell=C": [("W", [0, 1])]}
    index = json.loads((archive / "index.json").read_text())
    assert {cell: entry["n"] for cell, entry in index.items()} == {"e4": 1, "e8": 1, "probe": 1, "none": 2, "W": 2,
                                                                 "C": 2}
    assert (archive / "runs" / "probe" / "s0" / "transition.json").exists()
    assert json.loads((archive / "runs" / "W" / "s0" / "summary.json").read_text())["schema_version"] == 1
    for file in (archive / "runs").rglob("*"):
        assert not file.is_file() or str(out) not in file.read_text(), file
