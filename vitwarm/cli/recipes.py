"""``vitwarm-recipes``: the recipes and Accelerate launch configs that ship with vitwarm, by name.

    vitwarm-recipes list                 # every packaged recipe and accelerate config, by name
    vitwarm-recipes path fmnist_demo     # the file behind a name (e.g. for accelerate --config_file)
"""

from __future__ import annotations

import argparse
import sys

from ..catalog import accelerate_config_names, recipe_names, resolve_accelerate_config, resolve_recipe
from ..errors import command_name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=command_name("vitwarm-recipes"), description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the packaged recipes and accelerate configs")
    path = sub.add_parser("path", help="print the file of a recipe or accelerate config name")
    path.add_argument("name", help="recipe name (fmnist_demo), accelerate config name (cpu), or a path")
    path.add_argument("--accelerate", action="store_true", help="look the name up among the accelerate configs")
    args = parser.parse_args(argv)
    if args.command == "list":
        print("recipes (--config NAME):")
        print("\n".join(f"  {n}" for n in recipe_names()))
        print("accelerate configs (accelerate launch --config_file $(vitwarm-recipes path --accelerate NAME)):")
        print("\n".join(f"  {n}" for n in accelerate_config_names()))
        return 0
    try:
        resolve = resolve_accelerate_config if args.accelerate else resolve_recipe
        print(resolve(args.name).resolve())
    except ValueError as err:
        print(f"vitwarm: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
