"""A study's stages as runs: each cell's run of seed s in ``<out>/<cell>/s<seed>``, launched by the sweep launchers.

A stage's runs form waves: the runs of cells that no control of the stage waits for, then the controls
(``matched_to``), which need their matched run's summary before they start. Which cells an earlier stage's
rule chose (``from: STAGE.LABEL``) is decided when that stage has finished, from its runs' results
(vitwarm.sweeps.rules).
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from vitwarm.run.rundir import read_summary, write_overrides
from vitwarm.sweeps import transition
from vitwarm.sweeps.grid import DEFAULT_PORT_BASE, Run, Sweep, accelerate_prefix, train_command
from vitwarm.sweeps.rules import CellResults, apply_rule
from vitwarm.sweeps.study import Stage, Study

TRANSITION_ENTRY = [sys.executable, "-m", "vitwarm.sweeps.transition"]
Choices = dict[tuple[str, str], str]  # (stage, label) -> the cell that stage's rule chose


class NotChosen(ValueError):
    """A cell takes a choice of a stage that has not finished."""


def run_name(cell: str, seed: int) -> str:
    return f"{cell}/s{seed}"


@dataclass(frozen=True)
class StageSweep(Sweep):
    """One wave of a stage's runs; a transition stage's runs are finished when their transition.json is."""

    kind: str = "train"

    def identity(self, run: Run) -> dict:
        if self.kind == "transition":
            return transition.planned_identity(self.base, [f"{k}={v}" for k, v in run.overrides.items()])
        return super().identity(run)

    def state(self, run: Run) -> str:
        if self.kind == "train":
            return super().state(run)
        rows = transition.read_rows(self.run_dir(run))
        if rows is None:
            return "interrupted" if self.run_dir(run).is_dir() else "new"
        return "finished" if transition.same_identity(rows[0].get("identity"), self.identity(run)) else "other config"


def run_overrides(study: Study, cell: str, seed: int, choices: Choices) -> dict[str, str]:
    """The overrides of the cell's run of ``seed``; a control's names its matched run of the same seed, relative
    to its own directory (so the overrides file holds no path of this machine)."""
    overrides = study.overrides(cell, choices) | {"seed": str(seed)}
    matched = study.cells[cell].matched_to
    if matched:
        overrides["budget.matched_to"] = "${run.dir}/../../" + run_name(matched, seed)
    return overrides


def _prefix(study: Study, port: int) -> list[str]:
    launch = study.launch
    if launch.get("entry"):
        return shlex.split(str(launch["entry"]))
    return accelerate_prefix(int(launch.get("nproc", 1)), port, launch.get("accelerate_config"))


def plan_stage(study: Study, stage: Stage, choices: Choices) -> list[StageSweep]:
    """The stage's waves of runs (a cell whose choice is not made yet raises NotChosen, naming the stage)."""
    waves: list[list[Run]] = [[], []]
    port = DEFAULT_PORT_BASE
    for name in stage.cells:
        cell = study.cells[name]
        if cell.chosen_from and cell.chosen_from not in choices:
            source, label = cell.chosen_from
            made = [other for stage_name, other in choices if stage_name == source]  # its labels
            if made:  # the stage has finished, and its rule gave other labels
                raise ValueError(f"stage {stage.name}: cell {name} takes {source}.{label}, but stage {source}'s rule "
                                 f"chose only {', '.join(made)}")
            raise NotChosen(f"stage {stage.name}: cell {name} takes {source}.{label}, chosen when stage "
                            f"{source} has finished: run stage {source} first")
        for seed in cell.seeds:
            overrides = run_overrides(study, name, seed, choices)
            run_dir = study.out / run_name(name, seed)
            if stage.kind == "transition":
                command = [*TRANSITION_ENTRY, "--config", study.base, "--max-steps", str(stage.max_steps),
                           "--out", str(run_dir), *(f"{k}={v}" for k, v in overrides.items())]
            else:
                command = train_command(_prefix(study, port), study.base, overrides, run_dir)
            port += 1
            wave = 1 if cell.matched_to in stage.cells else 0
            waves[wave].append(Run(name=run_name(name, seed), overrides=overrides, command=command))
    return [StageSweep(out=study.out, base=study.base, grids={}, sets=study.set, runs=runs, kind=stage.kind)
            for runs in waves if runs]


def write_overrides_files(sweeps: list[StageSweep]) -> None:
    for sweep in sweeps:
        for run in sweep.runs:
            write_overrides(sweep.run_dir(run), run.overrides)


def results(sweep: StageSweep, run: Run) -> dict | None:
    """A finished run's result: its transition row, or its summary.json as a mapping."""
    if sweep.state(run) != "finished":
        return None
    if sweep.kind == "transition":
        return transition.read_rows(sweep.run_dir(run))[0]
    return vars(read_summary(sweep.run_dir(run)))


def choose(study: Study, stage: Stage, choices: Choices) -> dict[str, str]:
    """The labels the stage's rule gives its cells, from its finished runs (NotChosen while some are not)."""
    sweeps = plan_stage(study, stage, choices)
    cells = {name: CellResults(overrides=study.overrides(name, choices), results=[]) for name in stage.cells}
    left = 0
    for sweep in sweeps:
        for run in sweep.runs:
            found = results(sweep, run)
            left += found is None
            if found is not None:
                cells[run.name.split("/")[0]].results.append(found)
    if left:
        raise NotChosen(f"stage {stage.name} chooses when all its runs have finished ({left} left): run it first")
    return apply_rule(stage.choose, cells)


def choices_before(study: Study, stage: Stage, echo=None) -> Choices:
    """What every earlier stage's rule chose (stages whose choice cannot be made yet are left out)."""
    made: Choices = {}
    for earlier in study.stages[:study.stages.index(stage)]:
        if earlier.choose:
            try:
                chosen = choose(study, earlier, made)
            except NotChosen:
                continue
            made |= {(earlier.name, label): cell for label, cell in chosen.items()}
            if echo:
                echo(f"stage {earlier.name} chose: " + (", ".join(f"{k} = {v}" for k, v in chosen.items()) or "none"))
    return made


class Progress:
    """Per-stage progress: runs done, running, left, and the time left estimated from the finished runs."""

    def __init__(self, stage: Stage, sweeps: list[StageSweep], parallel: int, echo):
        self.stage, self.sweeps, self.parallel, self.echo = stage, sweeps, parallel, echo
        self.todo = self.ended = 0
        self.started = time.monotonic()

    def line(self) -> str:
        states = [s.state(run) for s in self.sweeps for run in s.runs]
        done = states.count("finished")
        running = min(self.parallel, self.todo - self.ended, len(states) - done)
        left = len(states) - done - running
        eta = ""
        if self.ended:  # the pace of this wave so far, start-up included
            estimate = (time.monotonic() - self.started) / self.ended * (left + running)
        else:  # each finished run's own wall seconds (summary.json's, a transition row's), without start-up
            seconds = [r.get("wall_s") or 0.0 for s in self.sweeps for run in s.runs if (r := results(s, run))]
            estimate = sum(seconds) / len(seconds) * (left + running) / self.parallel if seconds else 0
        if estimate:
            eta = f", about {estimate / 60:.0f} min left" if estimate >= 90 else f", about {estimate:.0f} s left"
        return f"stage {self.stage.name}: {done} done, {running} running, {left} left{eta}"

    def __call__(self, message: str) -> None:
        """The launcher's echo: its message, then the stage's progress after each run that ended."""
        self.echo(message)
        if message.startswith("["):  # "[i/n] NAME: ok in S s", one per run that ended (launch_local)
            self.ended += 1
            self.echo(self.line())

    def wave(self, todo: int) -> None:
        """A wave of ``todo`` unfinished runs starts."""
        self.todo, self.ended, self.started = todo, 0, time.monotonic()
        self.echo(self.line())


def cell_dirs(study: Study) -> dict[str, list[Path]]:
    """The run directories of each cell of a train stage, in seed order (what the report and archive read)."""
    return {name: [study.out / run_name(name, seed) for seed in cell.seeds] for name, cell in study.cells.items()
            if study.stage(study.stage_of[name]).kind == "train"}
