"""``vitwarm-train`` / ``python -m vitwarm.train``: one whole run (warm-up, transfer, image phase, evaluation).

    accelerate launch [accelerate flags] -m vitwarm.train --config RECIPE.yaml [key=value ...]
    python -m vitwarm.train --config RECIPE.yaml [key=value ...]        # the same in one process
    python -m vitwarm.train --config RECIPE.yaml [key=value ...] --print-config   # the resolved config
    python -m vitwarm.train --config RECIPE.yaml [key=value ...] --dry-run        # the checks, nothing written
"""

from __future__ import annotations

import argparse
import os
import sys

from ..catalog import recipe_names
from ..config import load_config
from ..config_doc import describe_config
from ..errors import ArgumentParser, command_name, one_line_errors
from ..run import train
from ..run.dryrun import dry_run
from ..run.orphans import exit_with_parent

DESCRIPTION = ("Procedural warm-up then image training of a timm ViT. Run under `accelerate launch [flags] -m "
               "vitwarm.train ...` for several processes.")
EPILOG = ("Example: accelerate launch -m vitwarm.train --config recipes/fmnist_demo.yaml warmup.fraction=0.05 "
          "seed=1 run.dir=runs/f05_s1. Every key with its doc and value: add --print-config.")


def parse_args(argv: list[str] | None = None, prog: str = "python -m vitwarm.train", description: str = DESCRIPTION,
               epilog: str = EPILOG) -> argparse.Namespace:
    parser = ArgumentParser(prog=command_name(prog), description=description,
                            epilog=f"{epilog} Packaged recipes (--config NAME): {', '.join(recipe_names())}")
    parser.add_argument("--config", required=True, help="recipe YAML: a path or a packaged name (vitwarm-recipes list)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (every key, its doc, and where its value came from: the "
                             "schema default, a recipe file or the command line) and exit")
    parser.add_argument("--dry-run", action="store_true",
                        help="check everything a run checks before step 1 (plan, data, preflight, run directory), "
                             "say what it would write and the free space, and exit; writes nothing")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. warmup.fraction=0.01 procedural.grammar=ww")
    return parser.parse_intermixed_args(argv)  # overrides may come before and after --config


def run_command(args: argparse.Namespace, forced: tuple[str, ...] = ()) -> None:
    """The run ``args`` name (``forced``: overrides a command adds after the user's, e.g. vitwarm warmup's), or
    its resolved config (--print-config), or its checks (--dry-run)."""
    exit_with_parent()  # a worker of `accelerate launch` dies with its launcher
    overrides = [*args.overrides, *forced]
    if args.print_config:
        print(describe_config(args.config, overrides))
        return
    cfg = load_config(args.config, overrides)
    if args.dry_run:
        if int(os.environ.get("RANK", "0")) == 0:  # under `accelerate launch`, one process prints
            print("\n".join(dry_run(cfg)))
        return
    train(cfg)


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    run_command(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
