"""Which shards each split of a run reads: evaluation never reads training shards (vitwarm.data.read_splits)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vitwarm.config import load_config
from vitwarm.data import DataError, read_dataset_info, read_splits

TRAIN_PATTERN = "fashion_mnist-train-{0000..0007}.tar"


def data_config(*overrides: str):
    return load_config(overrides=list(overrides)).data


def names(info) -> list[str]:
    return [Path(u).name for u in info.urls]


def test_directory_source_reads_each_split_by_name(fmnist_shards):
    splits = read_splits(data_config(f"data.source={fmnist_shards}", "data.test_split=test"))
    assert {k: v.split for k, v in splits.items()} == {"train": "train", "val": "validation", "test": "test"}
    assert names(splits["val"]) == ["fashion_mnist-validation-0000.tar", "fashion_mnist-validation-0001.tar"]
    assert splits["test"].num_samples == 10000


def test_pattern_source_takes_evaluation_splits_from_the_info_beside_it(fmnist_shards):
    splits = read_splits(data_config(f"data.source={fmnist_shards / TRAIN_PATTERN}", "data.test_split=test"))
    assert names(splits["train"]) == [f"fashion_mnist-train-{i:04d}.tar" for i in range(8)]
    assert splits["val"].split == "validation" and splits["val"].num_samples == 500
    assert all("-validation-" in u for u in splits["val"].urls)
    assert all("-test-" in u for u in splits["test"].urls)
    # A split the _info.json does not have is refused, with the ones it has and the key that would help.
    with pytest.raises(DataError, match=r"data.val_split='val': it is not a split of .*_info.json \(that has "
                                        r"\['test', 'train', 'validation'\]\); give data.val_source"):
        read_splits(data_config(f"data.source={fmnist_shards / TRAIN_PATTERN}", "data.val_split=val"))


def test_pattern_without_info_needs_an_explicit_evaluation_source(fmnist_shards, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in fmnist_shards.glob("fashion_mnist-t*.tar"):
        (bare / f.name).symlink_to(f)
    source = f"data.source={bare / TRAIN_PATTERN}|2000"
    with pytest.raises(DataError, match=r"data.val_split='validation': no _info.json in .*; give data.val_source"):
        read_splits(data_config(source))
    splits = read_splits(data_config(source, f"data.val_source={fmnist_shards}"))
    assert splits["val"].num_samples == 500 and splits["train"].num_samples == 2000


def test_pattern_of_another_split_is_refused(fmnist_shards):
    with pytest.raises(DataError, match="holds shards of split validation .*, not of split 'train'"):
        read_dataset_info(fmnist_shards / "fashion_mnist-validation-{0000..0001}.tar", "train")
    with pytest.raises(DataError, match="holds shards of split test and train"):
        read_dataset_info(fmnist_shards / "fashion_mnist-{train,test}-0000.tar", "train")


@pytest.mark.parametrize("overrides", [
    ["data.val_split=train"],                                                  # same directory, same split
    ["data.val_source={train_pattern}", "data.val_split=train"],              # the training pattern itself
    ["data.val_source={subset}", "data.val_split=train"],                     # two of its shards
    ["data.test_split=train", "data.test_source={alias}"],                    # the same files by another path
], ids=["val_split=train", "val_source=train pattern", "val_source=subset", "test via symlinked dir"])
def test_evaluation_overlapping_training_is_refused(fmnist_shards, tmp_path, overrides):
    alias = tmp_path / "alias"
    alias.symlink_to(fmnist_shards)
    values = dict(train_pattern=fmnist_shards / TRAIN_PATTERN, alias=alias,
                  subset=fmnist_shards / "fashion_mnist-train-{0002..0003}.tar")
    cfg = data_config(f"data.source={fmnist_shards}", *(o.format(**values) for o in overrides))
    with pytest.raises(DataError, match=r"shares \d+ of its \d+ shard\(s\) with the training split 'train', e.g. "
                                        r".*fashion_mnist-train-00\d\d.tar: evaluation must never read training"):
        read_splits(cfg)
