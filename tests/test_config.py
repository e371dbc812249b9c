"""The config tree: recipes and overrides merge; bad keys, types and values fail naming the key."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from vitwarm.catalog import resolve_accelerate_config
from vitwarm.config import flatten, load_config
from vitwarm.errors import ConfigError
from vitwarm.train import main

from helpers import call_main


def test_recipe_then_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("warmup:\n  fraction: 0.05\nmodel:\n  name: vitwarm_tiny_patch16_224\n")
    cfg = load_config(recipe, ["warmup.fraction=0.1", "procedural.params.k=16", "seed=3"])
    assert cfg.warmup.fraction == 0.1 and cfg.model.name == "vitwarm_tiny_patch16_224"
    assert cfg.procedural.params == {"k": 16} and cfg.seed == 3


def test_base_recipes_are_merged_first():
    cfg = load_config("recipes/imagenet/vit_base_kdyck.yaml")
    assert cfg.model.name == "vitwarm_base_patch16_224"  # from the recipe itself
    assert cfg.train.batch_size == 1024 and cfg.train.mixup == 0.8  # from deit.yaml
    assert cfg.warmup.fraction == 0.01


@pytest.mark.parametrize("override,message", [
    ("warmup.fractoin=0.1", "unknown config key 'warmup.fractoin'. Did you mean warmup.fraction"),
    ("modle.name=x", "unknown config key 'modle"),
    ("warmup.fraction=lots", "bad value for config key 'warmup.fraction'"),
    ("budget.regime=both",
     r"budget.regime='both' is not valid; choose one of \['substitutive', 'additive', 'compute_matched'\]"),
    ("warmup.fraction=1.5", r"warmup.fraction=1.5 is outside the valid range \[0, 1\]"),
    ("precision=fp8", "precision='fp8' is not valid"),
    ("precision=no", "precision='no' is not valid; choose one of \\['fp32', 'bf16', 'fp16'\\]"),
    ("resume=/no/such/checkpoint", "resume='/no/such/checkpoint': expected 'auto', 'never'"),
    ("train.batch_size=0", r"train.batch_size=0 is outside the valid range \[1, inf\)"),
    ("train.lr=-1", r"train.lr=-1.0 is outside the valid range \[0, inf\)"),
    ("model.name=vit_tiny_patch16_22", "is not a timm model .did you mean vit_tiny_patch16_224"),
    ("warmup.trainable=[blocks,foo]", "warmup.trainable=.'blocks', 'foo'.: 'foo' is not valid"),
    ("train.opt=adamx", "train.opt='adamx' is not valid .did you mean adamax"),
    ("data.aug.scale=[0.9,0.1]", r"data.aug.scale=\[0.9, 0.1\] must be \[min, max\]"),
    ("seed", "'seed' is not of the form key=value"),
])
def test_bad_configs_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


@pytest.mark.parametrize("text,message", [
    ("warmup: {fraction: 0.1\n", "is not valid YAML"),
    ("- warmup.fraction=0.1\n", "is a list, not a mapping of config keys"),
])
def test_malformed_recipe_names_the_file(tmp_path, text, message):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    with pytest.raises(ConfigError, match=f"recipe '{recipe}' {message}"):
        load_config(recipe)


def test_missing_recipe():
    with pytest.raises(ConfigError, match=r"recipe 'nope.yaml' is neither a file nor a packaged name; packaged: .*"
                                          r"fmnist_demo, fmnist_repro, imagenet/deit"):
        load_config("nope.yaml")


def test_a_misspelt_recipe_name_is_suggested():
    with pytest.raises(ConfigError, match=r"recipe 'fmnist_dmeo' is neither a file nor a packaged name "
                                          r"\(did you mean fmnist_demo\?\); packaged: "):
        load_config("fmnist_dmeo")
    with pytest.raises(ValueError, match=r"accelerate config 'cpu_dpd' .*\(did you mean cpu_ddp"):
        resolve_accelerate_config("cpu_dpd")


def test_recipes_by_name_and_by_path():
    by_name = load_config("imagenet/vit_tiny_kdyck")
    by_path = load_config(Path(__file__).parents[1] / "recipes/imagenet/vit_tiny_kdyck.yaml")
    assert by_name == by_path and by_name.model.name == "vitwarm_tiny_patch16_224"


def test_every_recipe_loads():
    from pathlib import Path
    recipes = [p for p in Path("recipes").rglob("*.yaml") if "accelerate" not in p.parts]
    assert len(recipes) >= 8
    for path in recipes:
        load_config(path)


def test_text_keys_keep_their_text():
    # YAML alone would read these as the integer 492 and the boolean false.
    cfg = load_config(None, ["transfer.blocks=8:12", "run.dir=no", "procedural.grammar=k_dyck", "seed=3"])
    assert cfg.transfer.blocks == "8:12" and cfg.run.dir == "no" and cfg.seed == 3


def test_flatten_gives_scalars():
    flat = flatten(load_config(None, ["model.kwargs.img_size=32"]))
    assert flat["model.kwargs.img_size"] == 32
    assert flat["transfer.parts"] == "['attn', 'mlp', 'norm']"
    assert all(isinstance(v, (int, float, str, bool)) for v in flat.values())


def test_print_config_shows_each_value_with_its_doc_and_source(tmp_path):
    """On the demo, beneath a recipe that names it as its base: a key from each of the three places, each
    with its doc line above it; the text is a recipe that gives the same config."""
    demo = Path(__file__).resolve().parents[1] / "recipes/fmnist_demo.yaml"
    child = tmp_path / "child.yaml"
    child.write_text(f"base: {demo}\nwarmup:\n  lr: 2.0e-3\n")
    overrides = ["seed=3", "procedural.params={k: 8}"]
    status, out = call_main(main, ["--config", str(child), *overrides, "--print-config"])
    assert status == 0, out
    lines = out.splitlines()
    for doc, line in [
        ("# Seed of everything: model inits, token streams, data order, augmentation.",
         "seed: 3  # from: command line"),
        ("  # timm model name (any VisionTransformer); the warm-up and the image phase use the same architecture.",
         "  name: vitwarm_pico_patch4_32  # from: schema default"),
        ("  # Global batch of sequences per optimizer step (all processes, all accumulation steps).",
         f"  batch_size: 8  # from: {demo}"),
        ("  # Peak learning rate of AdamW.", f"  lr: 0.002  # from: {child}"),
        ("  # Grammar parameters such as k, p_open, rule; empty means defaults; checked against the token grid.",
         "  params: {k: 8}  # from: command line"),
    ]:
        assert line in lines and lines[lines.index(line) - 1] == doc, line
    assert f"  source: data/fashion_mnist_f0.1  # from: {demo}" in lines  # resolved
    printed = tmp_path / "printed.yaml"
    printed.write_text(out)
    same = [OmegaConf.to_container(c, resolve=True) for c in (load_config(printed), load_config(child, overrides))]
    assert same[0] == same[1]
