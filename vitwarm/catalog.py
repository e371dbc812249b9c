"""The recipes and Accelerate launch configs that ship with vitwarm, addressable by name or by path
(the command line is ``vitwarm-recipes``, vitwarm.cli.recipes).

A recipe name is its path under ``recipes/`` without ``.yaml`` (``fmnist_demo``, ``imagenet/vit_base_kdyck``);
an accelerate config name is its file name under ``recipes/accelerate/`` without ``.yaml`` (``cpu``,
``gpu8``). Anything that is an existing file is taken as a path first. In a wheel the files live in the
package (``vitwarm/recipes/``, mapped from the repository's ``recipes/`` by setup.py); in a git checkout
they are the repository's ``recipes/`` itself.
"""

from __future__ import annotations

import difflib
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
    close = difflib.get_close_matches(name.removesuffix(".yaml"), names, n=3, cutoff=0.8)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ValueError(f"{what} {name!r} is neither a file nor a packaged name{hint}; packaged: {', '.join(names)}")


def resolve_recipe(name: str) -> Path:
    """A recipe path given as a path or as a packaged name; ValueError listing the names otherwise."""
    return _resolve(name, recipes_root(), recipe_names(), "recipe")


def resolve_accelerate_config(name: str) -> Path:
    """An accelerate config given as a path or as a packaged name; ValueError listing the names otherwise."""
    return _resolve(name, recipes_root() / ACCELERATE, accelerate_config_names(), "accelerate config")
