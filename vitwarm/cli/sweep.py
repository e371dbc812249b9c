"""Expand a grid of config overrides into vitwarm runs and launch them (see docs/sweeps.md).

    python tools/sweep.py --base recipes/R.yaml --grid warmup.fraction=0,0.01 --grid seed=0,1,2 \\
        --out runs/sweep1 --launcher local --parallel 2

Each run trains in SWEEP_DIR/NAME with ``accelerate launch ... -m vitwarm.train --config BASE k=v ...
run.dir=SWEEP_DIR/NAME resume=auto``. Finished runs (a summary.json under the run's planned config) are
skipped and interrupted ones resume, so the same command can be repeated until the whole sweep is done.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from vitwarm.catalog import resolve_accelerate_config, resolve_recipe
from vitwarm.errors import ArgumentParser, VitwarmError, one_line_errors
from vitwarm.sweeps.grid import DEFAULT_PORT_BASE, parse_assignment, parse_spec, plan_sweep, write_sweep
from vitwarm.sweeps.launch import gpu_slots, launch_local, launch_print, launch_slurm


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Grid values are passed to the trainer as typed (OmegaConf parses them); values cannot contain "
        "commas (write mixtures as k_dyck:3+ww:1).",
    )
    parser.add_argument("--base", required=True, help="base recipe every run starts from: a path or a packaged name")
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="a swept key and its values; repeat for a cartesian product (first --grid outermost)",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a fixed override for every run"
    )
    parser.add_argument("--out", required=True, help="sweep directory: sweep.json and one directory per run")
    parser.add_argument(
        "--launcher",
        required=True,
        choices=["local", "print", "slurm"],
        help="local: run here; print: print one command per unfinished run; slurm: submit a job array",
    )
    parser.add_argument(
        "--parallel", type=int, default=None, help="runs at once (local: default 1; slurm: array parallelism)"
    )
    parser.add_argument(
        "--nproc",
        type=int,
        default=None,
        help="processes (GPUs) per run, passed as accelerate --num_processes (default 1, slurm: --gpus-per-node)",
    )
    parser.add_argument(
        "--accelerate-config", help="accelerate config passed as --config_file: a path or a packaged name (cpu, gpu8)"
    )
    parser.add_argument(
        "--port-base",
        type=int,
        default=DEFAULT_PORT_BASE,
        help=f"run i gets --main_process_port PORT_BASE+i (default {DEFAULT_PORT_BASE})",
    )
    parser.add_argument(
        "--entry",
        help="command replacing 'accelerate launch ... -m vitwarm.train', e.g. 'python -m vitwarm.train'",
    )
    parser.add_argument(
        "--gpus",
        help="local: GPU ids to share out, e.g. 0,1,2,3; each of the --parallel runs gets --nproc of them",
    )
    parser.add_argument("--dry-run", action="store_true", help="show the runs and their state; write and run nothing")
    slurm = parser.add_argument_group("slurm launcher (needs pip install 'vitwarm[slurm]')")
    slurm.add_argument("--partition")
    slurm.add_argument("--gpus-per-node", type=int)
    slurm.add_argument("--cpus-per-task", type=int)
    slurm.add_argument("--mem-gb", type=int)
    slurm.add_argument("--timeout-min", type=int, default=24 * 60, help="per job; longer runs are requeued")
    slurm.add_argument(
        "--slurm-extra",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra sbatch option, e.g. account=abc or qos=high",
    )
    return parser


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.base = str(resolve_recipe(args.base))  # a path or a packaged recipe name
        if args.accelerate_config:
            args.accelerate_config = str(resolve_accelerate_config(args.accelerate_config))
        grids, sets = parse_spec(args.grid, args.set)
        nproc = args.nproc or (args.gpus_per_node if args.launcher == "slurm" else None) or 1
        sweep = plan_sweep(
            args.base,
            grids,
            sets,
            args.out,
            nproc=nproc,
            accelerate_config=args.accelerate_config,
            port_base=args.port_base,
            entry=shlex.split(args.entry) if args.entry else None,
        )
        slots = gpu_slots(args.gpus.split(","), args.parallel or 1, nproc) if args.gpus else None
        extra = dict(parse_assignment(text, "--slurm-extra") for text in args.slurm_extra)
    except ValueError as err:
        parser.error(str(err))

    if args.dry_run:
        for run in sweep.runs:
            print(f"{sweep.state(run):<12} {shlex.join(run.command)}")
        return 0
    try:
        write_sweep(sweep)
    except ValueError as err:
        parser.error(str(err))
    if args.launcher == "print":
        return launch_print(sweep)
    if args.launcher == "local":
        return launch_local(sweep, parallel=args.parallel or 1, slots=slots)
    try:
        launch_slurm(
            sweep,
            parallel=args.parallel,
            partition=args.partition,
            gpus_per_node=args.gpus_per_node,
            cpus_per_task=args.cpus_per_task,
            mem_gb=args.mem_gb,
            timeout_min=args.timeout_min,
            extra=extra,
        )
    except ImportError as err:  # the optional slurm dependency
        raise VitwarmError(str(err)) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
