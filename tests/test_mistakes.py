"""Every mistake is caught before the first step, in one line that names it (row format: ``Mistake`` in
tests/helpers.py).

Config keys, recipes and command-line arguments of every tool, in this interpreter, in a real process and
under a 2-process ``accelerate launch``; each row must fail with exactly one ``vitwarm: error:`` line that
names the mistake, no traceback and no run directory.
"""

from __future__ import annotations

import pytest

from vitwarm.cli.main import VERBS

from helpers import Mistake, check_mistake


def train(name: str, *overrides: str, names: str, launch: str = "inproc", files: dict | None = None) -> Mistake:
    """A ``python -m vitwarm.train --config tests/tiny.yaml OVERRIDES`` row."""
    return Mistake(name, ["-m", "vitwarm.train", "--config", "{tiny}", *overrides], names, launch=launch,
                   files=files or {})


def recipe(name: str, text: str, names: str) -> Mistake:
    """A row whose recipe is ``text`` (written to {tmp}/recipe.yaml)."""
    return Mistake(name, ["-m", "vitwarm.train", "--config", "{tmp}/recipe.yaml"], names,
                   files={"recipe.yaml": text})


CONFIG_KEYS = [
    train("misspelled model name", "model.name=vit_tiny_patch16_22", names="did you mean vit_tiny_patch16_224"),
    train("non-ViT model", "model.name=resnet18", names="model.name=resnet18 is a ResNet"),
    train("unknown model kwarg", "model.kwargs.foo=1", names="unexpected keyword argument 'foo'"),
    train("heads do not divide the width", "model.kwargs.num_heads=3", names="model.kwargs="),
    train("drop path rate of 5", "model.drop_path_rate=5", names="model.drop_path_rate=5.0"),
    train("two input channels", "model.in_chans=2", names="model.in_chans=2"),
    train("unknown grammar", "procedural.grammar=k_dyk", names="procedural.grammar='k_dyk'"),
    train("zero mixture weight", "procedural.grammar=k_dyck:0+ww:1", names="procedural.grammar="),
    train("grammar k too large", "procedural.params.k=100000", names="procedural.params="),
    train("nothing masked", "procedural.mask_ratio=0", names="procedural.mask_ratio=0.0"),
    train("odd token grid for brackets", "model.kwargs.img_size=21", names="3 x 3 = 9 token grid"),
    train("warm-up fraction above 1", "warmup.fraction=1.5", names="warmup.fraction=1.5"),
    train("unknown stop signal", "run.stop_signal=SIGTREM", names="run.stop_signal='SIGTREM'"),
    train("warm-up takes the whole budget", "warmup.fraction=1", names="warmup.fraction must be < 1"),
    train("warm-up batch larger than its budget", "warmup.batch_size=100000", names="warmup.batch_size=100000"),
    train("warm-up batch does not split", "warmup.batch_size=33", "warmup.grad_accum=2",
          names="warmup.batch_size=33 does not split"),
    train("negative warm-up lr", "warmup.lr=-1", names="warmup.lr=-1.0"),
    train("unknown pos_embed mode", "warmup.pos_embed=fixed", names="warmup.pos_embed='fixed'"),
    train("negative probe size", "warmup.probe.size=-1", names="warmup.probe.size=-1"),
    train("negative probe cadence", "warmup.probe.every_steps=-4", names="warmup.probe.every_steps=-4"),
    train("probe smaller than the processes", "warmup.probe.size=1", names="warmup.probe.size=1 cannot be split",
          launch="accelerate2"),
    train("unknown stop rule", "warmup.stop=patience", names="warmup.stop='patience'"),
    train("plateau without the probe", "warmup.stop=plateau", "warmup.probe.size=0",
          names="warmup.stop=plateau decides on the probe"),
    train("plateau without probe cadence", "warmup.stop=plateau", "warmup.probe.every_steps=0",
          names="warmup.probe.every_steps=0"),
    train("warm-up alone without a warm-up", "warmup.alone=true", "warmup.fraction=0",
          names="warmup.alone runs this run's own warm-up: it needs warmup.fraction > 0 (got 0.0)"),
    train("synthetic images with a source of evaluation shards", "data.source=synthetic", "data.val_source={tmp}",
          names="data.source=synthetic generates every split; data.val_source="),
    Mistake("synthetic images of two channels", ["-m", "vitwarm", "warmup", "--config", "{tiny}",
                                                 "data.source=synthetic", "data.synthetic.channels=2"],
            names="data.synthetic.channels=2 is not valid; choose one of [1, 3]"),
    train("matched_to without compute_matched", "budget.matched_to={tmp}", names="budget.matched_to="),
    train("matched_to an unfinished run", "budget.regime=compute_matched", "budget.matched_to={tmp}",
          names="is no finished run"),
    train("warm-up sequences longer than the grid", "warmup.seq_len=20", names="warmup.seq_len=20 is longer"),
    train("negative warm-up sequence length", "warmup.seq_len=-2", names="warmup.seq_len=-2"),
    train("odd warm-up sequences for brackets", "warmup.seq_len=7", names="7-token sequences (warmup.seq_len)"),
    train("zero rise", "warmup.stop_rise=0", names="warmup.stop_rise=0.0"),
    train("rise above 100 points", "warmup.stop_rise=150", names="warmup.stop_rise=150"),
    train("negative minimum gain", "warmup.stop_min_gain=-1", names="warmup.stop_min_gain=-1"),
    train("zero patience", "warmup.stop_patience=0", names="warmup.stop_patience=0"),
    train("zero cool-down", "warmup.cooldown=0", names="warmup.cooldown=0"),
    train("cool-down of the whole warm-up", "warmup.cooldown=1", names="warmup.cooldown=1"),
    train("cool-down inside the LR warm-up", "warmup.stop=plateau", "warmup.cooldown=0.5",
          "warmup.lr_warmup_fraction=0.6", names="warmup.lr_warmup_fraction=0.6 + warmup.cooldown=0.5"),
    train("unknown trainable part", "warmup.trainable=[blocks,foo]", names="warmup.trainable="),
    train("unknown transfer part", "transfer.parts=[attn,mlpp]", names="transfer.parts="),
    train("transfer blocks beyond the depth", "transfer.blocks=5:9", names="transfer.blocks='5:9'"),
    train("transfer blocks not a slice", "transfer.blocks=abc", names="transfer.blocks='abc'"),
    train("shuffling a part not transferred", "transfer.parts=[attn]", "transfer.shuffle=mlp",
          names="transfer.shuffle='mlp'"),
    train("unknown optimizer", "train.opt=adamx", names="train.opt='adamx'"),
    train("unknown scheduler", "train.sched=cosin", names="train.sched='cosin'"),
    train("negative lr", "train.lr=-1", names="train.lr=-1.0"),
    train("zero batch", "train.batch_size=0", names="train.batch_size=0"),
    train("image batch larger than the data", "train.batch_size=100000", names="train.batch_size=100000"),
    train("odd batch under mixup", "train.mixup=0.8", "train.batch_size=63", names="train.mixup"),
    train("label smoothing above 1", "train.label_smoothing=1.5", names="train.label_smoothing=1.5"),
    train("EMA decay of 1", "train.ema_decay=1", names="train.ema_decay=1.0"),
    train("unknown interpolation", "data.aug.interpolation=foo", names="data.aug.interpolation='foo'"),
    train("random interpolation at evaluation", "data.aug.interpolation=random",
          names="data.aug.interpolation='random'"),
    train("unknown auto-augment policy", "data.aug.auto_augment=bogus", names="data.aug.auto_augment='bogus'"),
    train("unknown random-erasing mode", "data.aug.re_mode=foo", names="data.aug.re_mode='foo'"),
    train("crop scale reversed", "data.aug.scale=[0.9,0.1]", names="data.aug.scale="),
    train("mean of two channels", "data.mean=[0.5,0.5]", names="data.mean="),
    train("zero crop", "data.crop_pct=0", names="data.crop_pct=0.0"),
    train("too many image workers for the shards", "data.num_workers=9", names="data.num_workers=9"),
    train("missing data source", "data.source={tmp}/nothing", names="data.source="),
    train("missing validation split", "data.val_split=valid", names="data.val_split='valid'"),
    train("unknown budget regime", "budget.regime=both", names="budget.regime='both'"),
    train("zero budget", "budget.epochs=0", names="budget.epochs=0.0"),
    train("evaluation never", "eval.every_epochs=0", names="eval.every_epochs=0.0"),
    train("checkpoint every 0 steps", "checkpoint.every_steps=0", names="checkpoint.every_steps=0"),
    train("negative log interval", "log.every_steps=-1", names="log.every_steps=-1"),
    train("precision as a YAML no", "precision=no", names="precision='no'"),
    train("negative seed", "seed=-1", names="seed=-1"),
    train("resume from a missing checkpoint", "resume={tmp}/nope", names="resume="),
    train("misspelled key", "warmup.fractoin=0.1", names="Did you mean warmup.fraction"),
    train("wrong type", "warmup.fraction=lots", names="warmup.fraction"),
    train("override without =", "seed", names="'seed' is not of the form key=value"),
]

RECIPES = [
    Mistake("missing recipe", ["-m", "vitwarm.train", "--config", "{tmp}/missing.yaml"], names="missing.yaml"),
    recipe("malformed recipe YAML", "warmup: {fraction: 0.1\n", names="recipe.yaml' is not valid YAML"),
    recipe("recipe that is a list", "- warmup.fraction=0.1\n", names="recipe.yaml' is a list"),
    recipe("recipe with a missing base", "base: nowhere.yaml\n", names="nowhere.yaml"),
    recipe("recipe with an unknown key", "warmup:\n  fractoin: 0.1\n", names="warmup.fractoin"),
]

TOOLS = [
    Mistake("train without --config", ["-m", "vitwarm.train"], names="--config", status=2),
    Mistake("make_shards without a command", ["tools/make_shards.py"], names="command", status=2),
    Mistake("make_shards from missing Fashion-MNIST files",
            ["tools/make_shards.py", "fmnist", "--out", "{tmp}/out", "--src", "{tmp}/nofmnist"], names="nofmnist"),
    Mistake("make_shards of a missing folder",
            ["tools/make_shards.py", "folder", "{tmp}/nosuch", "--out", "{tmp}/out", "--name", "x"], names="nosuch"),
    Mistake("make_shards verify of a missing folder", ["tools/make_shards.py", "verify", "{tmp}/nosuch"],
            names="nosuch"),
    Mistake("make_shards fraction above 1", ["tools/make_shards.py", "fmnist", "--out", "{tmp}/out", "--fraction", "2"],
            names="fraction"),
    Mistake("sweep of a missing base recipe",
            ["tools/sweep.py", "--base", "{tmp}/nope.yaml", "--out", "{tmp}/sw", "--launcher", "print"],
            names="nope.yaml", status=2),
    Mistake("sweep grid with an empty value",
            ["tools/sweep.py", "--base", "{tiny}", "--grid", "seed=0,,1", "--out", "{tmp}/sw", "--launcher", "print"],
            names="seed=0,,1", status=2),
    Mistake("sweep with an unknown launcher",
            ["tools/sweep.py", "--base", "{tiny}", "--out", "{tmp}/sw", "--launcher", "bogus"], names="bogus",
            status=2),
    Mistake("report of a missing directory", ["tools/report.py", "{tmp}/nosuch"], names="nosuch", status=2),
    Mistake("report of an unknown metric", ["tools/report.py", "{tmp}", "--metric", "bogus"], names="bogus",
            status=2),
    Mistake("study of a missing file", ["-m", "vitwarm", "study", "{tmp}/nope.yaml", "--dry-run"],
            names="nope.yaml: no such study file"),
    Mistake("study control matched to an unknown cell", ["-m", "vitwarm", "study", "{tmp}/s.yaml", "--dry-run"],
            names="cells.C.matched_to: unknown cell 'W3'",
            files={"s.yaml": "base: fmnist_repro\nseeds: [0]\ncells:\n  W: {set: {warmup.fraction: 0.2}}\n"
                             "  C: {extends: W, matched_to: W3}\n"}),
    Mistake("vitwarm without a verb", ["-m", "vitwarm"], names="no verb given; choose one of train", status=2),
    Mistake("vitwarm with a misspelled verb", ["-m", "vitwarm", "trian"], names="'trian' (did you mean train?)",
            status=2),
    Mistake("procedural viewer without a command", ["-m", "vitwarm", "grammars"], names="command", status=2),
    Mistake("procedural viewer of an unknown grammar", ["-m", "vitwarm", "grammars", "show", "k_dyk"],
            names="k_dyk", status=2),
    Mistake("procedural viewer with an odd length",
            ["-m", "vitwarm", "grammars", "show", "k_dyck", "--seq-len", "7"], names="seq_len", status=2),
    Mistake("procedural viewer parameter without =",
            ["-m", "vitwarm", "grammars", "show", "k_dyck", "--param", "k"], names="--param", status=2),
]

# Rows run in processes of their own (the first four one process, the rest under accelerate launch): slow.
PROCESSES = [pytest.param(row, marks=pytest.mark.slow) for row in [
    train("misspelled model name, own process", "model.name=vit_tiny_patch16_22", names="model.name=",
          launch="subprocess"),
    Mistake("train without --config, own process", ["-m", "vitwarm.train"], names="--config", status=2,
            launch="subprocess"),
    Mistake("make_shards of a missing folder, own process",
            ["tools/make_shards.py", "folder", "{tmp}/nosuch", "--out", "{tmp}/out", "--name", "x"], names="nosuch",
            launch="subprocess"),
    Mistake("procedural viewer of an unknown grammar, own process", ["-m", "vitwarm", "grammars", "show", "k_dyk"],
            names="k_dyk", status=2, launch="subprocess"),
    train("misspelled model name, 2 processes", "model.name=vit_tiny_patch16_22", names="model.name=",
          launch="accelerate2"),
    train("image batch does not split over 2 processes", "train.batch_size=65",
          names="train.batch_size=65 does not split over 2 processes", launch="accelerate2"),
    train("missing data source, 2 processes", "data.source={tmp}/nothing", names="data.source=",
          launch="accelerate2"),
]]

ROWS = CONFIG_KEYS + RECIPES + TOOLS + PROCESSES


def command_of(row) -> str:
    """The command a row runs, as a verb of ``vitwarm`` (``-m vitwarm.train`` and ``tools/sweep.py`` too)."""
    argv = (row.values[0] if hasattr(row, "values") else row).argv  # a row, or a pytest.param of one
    if argv[:2] == ["-m", "vitwarm"]:
        return argv[2] if len(argv) > 2 else "vitwarm"
    if argv[0] == "-m":
        return argv[1].removeprefix("vitwarm.")
    tool = argv[0].removeprefix("tools/").removesuffix(".py")
    return {"make_shards": "shards"}.get(tool, tool)


def test_every_command_that_reads_user_input_has_its_mistakes():
    # Each verb that reads a recipe, files or arguments (all but the recipe listing) has rows, and the
    # dispatcher itself; rows run in this interpreter, in a process of their own and under accelerate.
    assert {command_of(row) for row in ROWS} >= {"vitwarm", *VERBS} - {"recipes"}
    assert {(row.values[0] if hasattr(row, "values") else row).launch for row in ROWS} == {
        "inproc", "subprocess", "accelerate2"}


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_mistake_is_one_line_before_step_one(row, tmp_path, fmnist_shards):
    check_mistake(row, tmp_path, fmnist_shards)
