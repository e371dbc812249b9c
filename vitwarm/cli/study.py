"""Run a study file's stages, report it, or archive it (see docs/studies.md).

    python -m vitwarm.cli.study studies/mine.yaml [STAGE ...] [--launcher local|print|slurm] [--parallel N]
    python -m vitwarm.cli.study studies/mine.yaml --dry-run
    python -m vitwarm.cli.study studies/mine.yaml report [--archived] [--metric test_top1]
    python -m vitwarm.cli.study studies/mine.yaml archive

The study file is checked whole before any run. Stages run in the file's order (all of them, or those
named); finished runs are skipped and interrupted ones resume, so the same command can be repeated until
the study is done. A stage that chooses from an earlier one waits until that one has finished.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from vitwarm.errors import ArgumentParser, ConfigError, VitwarmError, one_line_errors
from vitwarm.run.rundir import read_overrides
from vitwarm.sweeps import transition
from vitwarm.sweeps.archive import RUNS, archive_study
from vitwarm.sweeps.grid import planned_identity
from vitwarm.sweeps.launch import launch_local, launch_print, launch_slurm
from vitwarm.sweeps.stages import NotChosen, Progress, cell_dirs, choices_before, plan_stage, write_overrides_files
from vitwarm.sweeps.study import Study, read_study


def check_configs(study: Study) -> None:
    """Load every cell's config (with its first seed) before any run: a bad key or value is one line naming the
    cell. A cell whose choice is not made yet is checked without it."""
    choices = choices_before(study, study.stages[-1])
    for name, cell in study.cells.items():
        try:
            overrides = study.overrides(name, choices)
        except KeyError:
            overrides = study.set | cell.set
        overrides = [f"{k}={v}" for k, v in overrides.items()] + [f"seed={cell.seeds[0]}"]
        try:
            if study.stage(study.stage_of[name]).kind == "transition":
                transition.planned_identity(study.base, overrides)
            else:
                planned_identity(study.base, dict(o.split("=", 1) for o in overrides), study.out / name)
        except ConfigError as err:
            raise ConfigError(f"{study.path}: cells.{name}: {err}") from None


def dry_run(study: Study, stages: list) -> int:
    for stage in stages:
        try:
            sweeps = plan_stage(study, stage, choices_before(study, stage, echo=print))
        except NotChosen as err:
            print(f"stage {stage.name}: waits ({err})")
            continue
        print(Progress(stage, sweeps, 1, print).line())
        for sweep in sweeps:
            for run in sweep.runs:
                print(f"  {sweep.state(run):<12} {run.name:<24} {shlex.join(run.command)}")
    return 0


def run_stages(study: Study, stages: list, launcher: str, parallel: int | None) -> int:
    for stage in stages:
        sweeps = plan_stage(study, stage, choices_before(study, stage, echo=print))
        write_overrides_files(sweeps)
        progress = Progress(stage, sweeps, parallel or 1, print)
        for i, sweep in enumerate(sweeps):
            todo = [run for run in sweep.runs if sweep.state(run) != "finished"]
            if launcher == "print":
                if i:
                    print("# after the commands above have finished (each control starts from its matched run):")
                launch_print(sweep)
                continue
            progress.wave(len(todo))
            if launcher == "local":
                if launch_local(sweep, parallel=parallel or 1, echo=progress):
                    return 1
            elif todo:
                try:
                    launch_slurm(sweep, parallel=parallel)
                except ImportError as err:  # the optional slurm dependency
                    raise VitwarmError(str(err)) from None
                print(f"stage {stage.name}: submitted; run this command again when the jobs have finished "
                      "(the runs and stages that wait for them start then)")
                return 0
    return 0


def named_results(study: Study, root: Path, archived: bool):
    """The study's runs in ``root`` (its out folder, or an archive's runs folder) as its report reads them."""
    from vitwarm.analysis.results import load_named_cells

    cells = {}
    for name, dirs in cell_dirs(study).items():
        runs = []
        for run_dir in (root / d.relative_to(study.out) for d in dirs):
            own = read_overrides(run_dir)
            # Archived runs are read as they are; a run here counts only under the config it was planned with.
            runs.append((run_dir, None if archived or own is None else planned_identity(study.base, own, run_dir)))
        cells[name] = runs
    matched = {name: cell.matched_to for name, cell in study.cells.items() if cell.matched_to}
    return load_named_cells(cells, matched)


def report(study: Study, archived: bool, metric: str) -> int:
    from vitwarm.analysis.report import build_report

    root = study.archive / RUNS if archived else study.out
    out = (study.archive if archived else study.out) / "report"
    out = out if metric == "top1" else out / metric  # validation top-1, the other metrics beside it
    result = build_report(root, out, metric, results=named_results(study, root, archived), pairs=study.compare,
                          title=f"Study report: {study.name}", sizes=study.by_size)
    print(result["markdown"])
    print(f"report written to {out}")
    return 0


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", help="the study file (YAML)")
    parser.add_argument("what", nargs="*", metavar="STAGE|report|archive",
                        help="stages to run (default: all, in order), or report, or archive")
    parser.add_argument("--launcher", default="local", choices=["local", "print", "slurm"],
                        help="local: run here (default); print: one command per unfinished run; slurm: job arrays")
    parser.add_argument("--parallel", type=int, help="runs at once (local: default 1; slurm: array parallelism)")
    parser.add_argument("--dry-run", action="store_true", help="show every stage's runs and their state; run nothing")
    parser.add_argument("--archived", action="store_true", help="report: read the archive, not the runs")
    parser.add_argument("--metric", default="top1", help="report: the summary.json metric (default top1)")
    return parser


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.parallel is not None and args.parallel < 1:
        parser.error(f"--parallel {args.parallel}: give 1 or more")
    study = read_study(args.study)
    if args.what == ["report"]:
        return report(study, args.archived, args.metric)
    if args.what == ["archive"]:
        archive_study(study)
        return 0
    names = [s.name for s in study.stages]
    for name in args.what:
        if name not in names:
            parser.error(f"{name!r} is no stage of {args.study} (stages: {', '.join(names)}; or report, archive)")
    stages = [s for s in study.stages if not args.what or s.name in args.what]
    check_configs(study)
    if args.dry_run:
        return dry_run(study, stages)
    return run_stages(study, stages, args.launcher, args.parallel)


if __name__ == "__main__":
    sys.exit(main())
