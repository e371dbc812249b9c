"""``vitwarm-train`` / ``python -m vitwarm.train``: one whole run (warm-up, transfer, image phase, evaluation).

    accelerate launch [accelerate flags] -m vitwarm.train --config RECIPE.yaml [key=value ...]
    python -m vitwarm.train --config RECIPE.yaml [key=value ...]        # the same in one process
"""

from __future__ import annotations

import argparse
import sys

from ..catalog import recipe_names
from ..config import load_config
from ..errors import ArgumentParser, command_name, one_line_errors
from ..run import train
from ..run.orphans import exit_with_parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog=command_name("python -m vitwarm.train"),
        description="Procedural warm-up then image training of a timm ViT. Run under `accelerate launch "
                    "[flags] -m vitwarm.train ...` for several processes.",
        epilog="Example: accelerate launch -m vitwarm.train --config recipes/fmnist_demo.yaml "
               "warmup.fraction=0.05 seed=1 run.dir=runs/f05_s1. Packaged recipes (--config NAME): "
               + ", ".join(recipe_names()))
    parser.add_argument("--config", required=True, help="recipe YAML: a path or a packaged name (vitwarm-recipes list)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. warmup.fraction=0.01 procedural.grammar=ww")
    return parser.parse_intermixed_args(argv)  # overrides may come before and after --config


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    exit_with_parent()  # a worker of `accelerate launch` dies with its launcher
    args = parse_args(argv)
    train(load_config(args.config, args.overrides))


if __name__ == "__main__":
    sys.exit(main())
