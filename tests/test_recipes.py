"""The recipes state each setting once: nothing a recipe's bases (or the schema) already give, nothing two
recipes on the same base both repeat, and each runnable recipe keeps its header (command, runtime, result).
Bases that go wrong (missing, cyclic) and renamed keys fail in one line naming the file or key."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import DictConfig, ListConfig, OmegaConf

from vitwarm.config import Config, load_config, read_recipe
from vitwarm.data.sources import read_info
from vitwarm.errors import ConfigError
from vitwarm.procedural import GRAMMARS
from vitwarm.run.rundir import identity, write_config

from helpers import ROOT, train

RECIPES = sorted(p for p in (ROOT / "recipes").rglob("*.yaml") if "accelerate" not in p.relative_to(ROOT).parts)


def own_settings(path: Path) -> dict[str, object]:
    """The recipe's own ``dotted.key: value`` settings (lists and empty mappings are values), without ``base``."""
    settings: dict[str, object] = {}

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else key)
        else:
            settings[prefix] = node

    tree = OmegaConf.to_container(OmegaConf.load(path))
    tree.pop("base", None)
    walk(tree, "")
    return settings


def direct_base(path: Path) -> Path | None:
    base = OmegaConf.load(path).get("base")
    return (path.parent / base).resolve() if base else None


def same(a: object, b: object) -> bool:
    """Equal, with numbers equal to 3 significant digits (0.0667 restates 1/15)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-3)
    return a == b


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.relative_to(ROOT / "recipes").as_posix())
def test_no_recipe_restates_what_its_bases_give(path):
    inherited = OmegaConf.merge(OmegaConf.structured(Config), *read_recipe(path)[:-1])
    restated = []
    for key, value in own_settings(path).items():
        given = OmegaConf.select(inherited, key)
        given = OmegaConf.to_container(given) if isinstance(given, (DictConfig, ListConfig)) else given
        if same(value, given):
            restated.append(f"{key}: {value!r}")
    assert not restated, f"{path.name} sets what the schema or its base already gives: {restated}"


def test_recipes_on_one_base_share_no_setting():
    """Two recipes on the same base that set the same value: it belongs in the base. Recipes on the schema alone
    stand on their own on purpose (the demo reads top to bottom; the study's base keeps its recorded settings)."""
    by_base: dict[Path | None, list[Path]] = {}
    for path in RECIPES:
        by_base.setdefault(direct_base(path), []).append(path)
    shared = []
    for base, siblings in by_base.items():
        if base is None:
            continue
        for i, a in enumerate(siblings):
            for b in siblings[i + 1:]:
                mine, theirs = own_settings(a), own_settings(b)
                shared += [f"{a.name} and {b.name}: {k}" for k in mine.keys() & theirs.keys()
                           if same(mine[k], theirs[k])]
    assert not shared, shared
    assert len(by_base[(ROOT / "recipes/imagenet/deit.yaml").resolve()]) == 5  # the five model recipes


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.relative_to(ROOT / "recipes").as_posix())
def test_every_runnable_recipe_keeps_its_header(path):
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    text = "\n".join(header)
    assert header, f"{path.name} has no header comment"
    if "not run on its own" in text.lower():
        return  # a base of other recipes
    assert f"--config recipes/{path.relative_to(ROOT / 'recipes').as_posix()}" in text, "the exact command"
    assert "Runtime" in text and "Expected" in text


def test_the_prepared_fmnist_directory_follows_the_train_fraction(tmp_path):
    """Another data.train_fraction prepares its own shard set instead of filling the demo's directory."""
    demo = load_config("fmnist_demo")
    assert (demo.data.prepare, demo.data.source) == ("fmnist", "data/fashion_mnist_f0.1")
    smaller = load_config("fmnist_demo", ["data.train_fraction=0.02"])
    assert smaller.data.source == "data/fashion_mnist_f0.02"
    assert load_config("fmnist_repro").data.source == "data/fashion_mnist_f0.1"
    # The run directory's config.yaml and the run's identity hold the directory, not the interpolation.
    write_config(tmp_path, smaller)
    assert OmegaConf.load(tmp_path / "config.yaml").data.source == "data/fashion_mnist_f0.02"
    assert identity(smaller)["data.source"] == "data/fashion_mnist_f0.02"
    # A source given on the command line is taken as given.
    assert load_config("fmnist_demo", ["data.train_fraction=0.02", "data.source=elsewhere"]).data.source == "elsewhere"


@pytest.mark.slow
def test_a_run_with_another_fraction_prepares_its_own_directory(tmp_path, fmnist_src):
    """The demo's data section on the tiny model: data.train_fraction=0.02 writes data/..._f0.02 and leaves
    the 10% set of the plain demo as it was."""
    demo_set = tmp_path / "fashion_mnist_f0.1"
    demo_set.mkdir()
    (demo_set / "_info.json").write_text('{"stands for": "the demo\'s shards"}')
    source = f"data.source={tmp_path}/fashion_mnist_f${{data.train_fraction}}"
    result = train(tmp_path / "run", tmp_path, source, "data.prepare=fmnist", "data.train_fraction=0.02",
                   "warmup.fraction=0", "budget.epochs=1", "eval.every_epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_info(tmp_path / "fashion_mnist_f0.02")["build"]["fraction"] == 0.02
    assert [p.name for p in demo_set.iterdir()] == ["_info.json"]
    assert "stands for" in (demo_set / "_info.json").read_text()
    assert OmegaConf.load(tmp_path / "run" / "config.yaml").data.source == f"{tmp_path}/fashion_mnist_f0.02"


def test_model_recipes_are_a_few_lines():
    for path in (ROOT / "recipes/imagenet").glob("vit_*.yaml"):
        assert len(own_settings(path)) <= 3, path.name


def test_schema_defaults_are_the_papers_warmup():
    """The ImageNet and paper recipes take their warm-up from the schema: it must stay the paper's setting
    (docs/method.md#the-papers-warm-up-setting)."""
    cfg = load_config(ROOT / "recipes/imagenet/vit_base_kdyck.yaml")
    w, p = cfg.warmup, cfg.procedural
    assert (p.grammar, p.mask_ratio, dict(p.params)) == ("k_dyck", 0.5, {})
    assert (w.fraction, w.batch_size, w.lr, w.min_lr, w.weight_decay, w.pos_embed) == (
        0.01, 256, 2e-3, 1e-5, 0.05, "frozen")
    assert w.lr_warmup_fraction == pytest.approx(1000 / 15000)
    assert GRAMMARS["k_dyck"].defaults["k"] == 64  # 128 symbols


def test_bases_chain_in_order(tmp_path):
    (tmp_path / "a.yaml").write_text("seed: 1\nwarmup: {fraction: 0.2}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/b.yaml").write_text("base: ../a.yaml\nseed: 2\n")
    (tmp_path / "c.yaml").write_text("base: sub/b.yaml\nwarmup: {batch_size: 64}\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert (cfg.seed, cfg.warmup.fraction, cfg.warmup.batch_size) == (2, 0.2, 64)


def test_missing_and_cyclic_bases_name_the_file(tmp_path):
    (tmp_path / "m.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=f"recipe '{tmp_path / 'm.yaml'}' names base: nowhere.yaml, but "
                                          f"{tmp_path / 'nowhere.yaml'} is not a file"):
        load_config(tmp_path / "m.yaml")
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nseed: 1\n")
    with pytest.raises(ConfigError, match=r"recipe '.*b.yaml' names base: a.yaml, a cycle \(.*a.yaml -> .*b.yaml "
                                          r"-> .*a.yaml\)"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "l.yaml").write_text("base: [a.yaml, b.yaml]\n")
    with pytest.raises(ConfigError, match="l.yaml' has base: .*; a base is one recipe file"):
        load_config(tmp_path / "l.yaml")


@pytest.mark.slow
def test_a_cycle_is_one_line_on_the_command_line(tmp_path):
    (tmp_path / "self.yaml").write_text("base: self.yaml\n")
    result = subprocess.run([sys.executable, "-m", "vitwarm.train", "--config", str(tmp_path / "self.yaml")],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"vitwarm: error: recipe '{tmp_path / 'self.yaml'}' names base: self.yaml, a cycle "
        f"({tmp_path / 'self.yaml'} -> {tmp_path / 'self.yaml'}); a base must not name the recipes that include it"]


@pytest.mark.parametrize("old,new", [("warmup.lr_warmup", "warmup.lr_warmup_fraction"),
                                     ("train.warmup_epochs", "train.lr_warmup_epochs")])
def test_renamed_keys_say_their_new_name(tmp_path, old, new):
    message = f"config key '{old}' was renamed to '{new}' \\(same value, .*\\): write {new}=VALUE"
    with pytest.raises(ConfigError, match=message):
        load_config(None, [f"{old}=0.1"])
    section, key = old.split(".")
    (tmp_path / "old.yaml").write_text(f"{section}:\n  {key}: 0.1\n")
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "old.yaml")
    assert OmegaConf.select(load_config(None, [f"{new}=0.1"]), new) == 0.1
