"""The recipes and Accelerate launch configs that ship with vitwarm, addressable by name or by path.

    vitwarm-recipes list                 # every packaged recipe and accelerate config, by name
    vitwarm-recipes path fmnist_demo     # the file behind a name (e.g. for accelerate --config_file)

A recipe name is its path under ``recipes/`` without ``.yaml`` (``fmnist_demo``, ``imagenet/vit_base_kdyck``);
an accelerate config name is its file name under ``recipes/accelerate/`` without ``.yaml`` (``cpu``,
``gpu8``). Anything that is an existing file is taken as a path first. In a wheel the files live in the
package (``vitwarm/recipes/``, mapped from the repository's ``recipes/`` by setup.py); in a git checkout
they are the repository's ``recipes/`` itself.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ACCELERATE = "accelerate"  # the sub-folder of launch configs; everything else that ends in .yaml is a recipe


def recipes_root() -> Path:
    """The packaged recipes folder (installed wheel), else the checkout's ``recipes/`` beside the package."""
    packaged = Path(__file__).with_name("recipes")
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[1] / "recipes"


def recipe_names() -> list[str]:
    """Names of the packaged recipes, sorted."""
    root = recipes_root()
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml")
                  if p.relative_to(root).parts[0] != ACCELERATE)


def accelerate_config_names() -> list[str]:
    """Names of the packaged accelerate launch configs, sorted."""
    return sorted(p.stem for p in (recipes_root() / ACCELERATE).glob("*.yaml"))


def _resolve(name: str, folder: Path, names: list[str], what: str) -> Path:
    if Path(name).is_file():
        return Path(name)
    candidate = folder / (name if name.endswith(".yaml") else f"{name}.yaml")
    if candidate.is_file():
        return candidate
    raise ValueError(f"{what} {name!r} is neither a file nor a packaged name; packaged: {', '.join(names)}")


def resolve_recipe(name: str) -> Path:
    """A recipe path given as a path or as a packaged name; ValueError listing the names otherwise."""
    return _resolve(name, recipes_root(), recipe_names(), "recipe")


def resolve_accelerate_config(name: str) -> Path:
    """An accelerate config given as a path or as a packaged name; ValueError listing the names otherwise."""
    return _resolve(name, recipes_root() / ACCELERATE, accelerate_config_names(), "accelerate config")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vitwarm-recipes", description=__doc__.split("\n\n")[0])
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
