"""The exports describe the data the run evaluated on (vitwarm.run.export)."""

from __future__ import annotations

import json

import torch

from vitwarm.config import load_config
from vitwarm.run.export import export_run
from vitwarm.run.phases.common import build_vit

TRAIN_PATTERN = "fashion_mnist-train-{0000..0007}.tar"


def test_export_takes_classes_and_statistics_from_the_validation_source(fmnist_shards, tmp_path):
    # A validation source of its own whose _info.json names other classes and statistics than the
    # _info.json beside the training pattern: the export must describe the split the run evaluates on.
    val = tmp_path / "val"
    val.mkdir()
    info = json.loads((fmnist_shards / "_info.json").read_text())
    info["splits"] = {"validation": info["splits"]["validation"]}
    info["classes"] = [f"other{i}" for i in range(10)]
    info["mean"], info["std"] = [0.5], [0.25]
    (val / "_info.json").write_text(json.dumps(info))
    for name in info["splits"]["validation"]["filenames"]:
        (val / name).symlink_to(fmnist_shards / name)
    cfg = load_config("tests/tiny.yaml", [f"data.source={fmnist_shards / TRAIN_PATTERN}", f"data.val_source={val}",
                                          f"run.dir={tmp_path / 'run'}"])
    torch.manual_seed(0)
    out = export_run(cfg, build_vit(cfg.model, num_classes=10), "model")
    config = json.loads((out / "config.json").read_text())
    assert config["label_names"] == info["classes"]
    assert config["pretrained_cfg"]["mean"] == [0.5] and config["pretrained_cfg"]["std"] == [0.25]
    # The training source's own _info.json says otherwise: the export did not read it.
    beside = json.loads((fmnist_shards / "_info.json").read_text())
    assert beside["classes"] != info["classes"] and beside["mean"] != [0.5]
