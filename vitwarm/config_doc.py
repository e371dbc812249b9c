"""The resolved config as text (``--print-config``): every key, with its one-line doc and where its value came from.

The docs are the docstrings under the fields of vitwarm.config's dataclasses (read from its source: Python
keeps no attribute docstrings at run time). A key's source is the last layer of ``load_config`` that set it:
the schema default, a recipe file of the ``base:`` chain, or the command line. The text is YAML: saved to a
file it is a recipe that gives the same config.
"""

from __future__ import annotations

import ast
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from . import config
from .config import Config, load_config, override_layer, recipe_files

SCHEMA = "schema default"
COMMAND_LINE = "command line"


def field_docs() -> dict[str, dict[str, str]]:
    """``{dataclass name: {field: its docstring on one line}}`` of vitwarm.config."""
    docs: dict[str, dict[str, str]] = {}
    for node in ast.parse(Path(config.__file__).read_text()).body:
        if not isinstance(node, ast.ClassDef):
            continue
        own = docs.setdefault(node.name, {})
        for item, after in zip(node.body, node.body[1:]):
            if (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                own[item.target.id] = " ".join(after.value.value.split())
    return docs


def set_keys(layer: Any, prefix: str = "") -> list[str]:
    """The dotted keys a config layer sets (a non-empty mapping is walked into; anything else is a value)."""
    if isinstance(layer, dict) and layer:
        return [k for key, value in layer.items() for k in set_keys(value, f"{prefix}{key}.")]
    return [prefix.removesuffix(".")]


def describe_config(recipe: str | Path | None, overrides: list[str]) -> str:
    """The resolved config of ``load_config(recipe, overrides)`` with each key's doc and source (module docstring)."""
    cfg = load_config(recipe, overrides)  # refuses what a run refuses, before anything is printed
    layers = [(str(path), OmegaConf.to_container(layer)) for path, layer in
              (recipe_files(recipe) if recipe is not None else [])]
    if overrides:
        layers.append((COMMAND_LINE, OmegaConf.to_container(override_layer(overrides))))
    sources: dict[str, str] = {}
    for name, layer in layers:  # later layers win, as in load_config's merge
        sources |= dict.fromkeys(set_keys(layer), name)
    lines = ["# The resolved config: each key's doc above it and, after it, where its value came from (the schema",
             "# default, a recipe file of the base: chain, or the command line). Saved to a file, it is a recipe."]
    _section(Config, cfg, "", 0, field_docs(), sources, lines)
    return "\n".join(lines)


def _source(key: str, sources: dict[str, str]) -> str:
    """The last layer that set ``key`` or something inside it (a free-form mapping such as procedural.params)."""
    found = [name for k, name in sources.items() if k == key or k.startswith(key + ".")]
    return found[-1] if found else SCHEMA


def _section(schema: type, cfg: DictConfig, prefix: str, depth: int, docs: dict[str, dict[str, str]],
             sources: dict[str, str], lines: list[str]) -> None:
    indent = "  " * depth
    for f in fields(schema):
        key, doc = f"{prefix}{f.name}", docs.get(schema.__name__, {}).get(f.name, "")
        if doc:
            lines.append(f"{indent}# {doc}")
        if is_dataclass(f.default_factory):  # a section: its keys inside
            lines.append(f"{indent}{f.name}:")
            _section(f.default_factory, cfg, f"{key}.", depth + 1, docs, sources, lines)
            continue
        value = OmegaConf.select(cfg, key)
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()
        lines.append(f"{indent}{f.name}: {text}  # from: {_source(key, sources)}")
