"""Generated images (vitwarm.data.synthetic): deterministic from their own seed, shaped and labelled as the
config says, read through the same loaders as shards, and a recipe checked on them without its data."""

from __future__ import annotations

import io
from collections import Counter

import torch
from PIL import Image

from vitwarm.config import load_config
from vitwarm.data import describe_train, make_train_loader, read_splits
from vitwarm.data.reader import Faults, decode
from vitwarm.data.synthetic import synthetic_shard
from vitwarm.run.preflight import preflight

from helpers import SYNTHETIC, TINY


def splits(*overrides: str):
    return read_splits(load_config(TINY, [*SYNTHETIC, *overrides]).data)


def samples(info) -> list[dict]:
    return [s for url in info.urls for s in synthetic_shard(url)]


def test_images_follow_the_options_and_are_balanced():
    found = splits("data.synthetic.shape=[20,12]", "data.synthetic.channels=3", "data.synthetic.classes=4",
                   "data.synthetic.samples=100", "data.test_split=test")
    assert {role: (info.split, info.num_samples) for role, info in found.items()} == {
        "train": ("train", 100), "val": ("validation", 64), "test": ("test", 64)}
    train = samples(found["train"])
    assert len(train) == 100 == sum(found["train"].shard_lengths)
    decoded = [decode(s, 4, Faults(strict=True)) for s in train]
    assert {(img.mode, img.size) for img, _ in decoded} == {("RGB", (12, 20))}  # PIL: (width, height)
    assert Counter(label for _, label in decoded) == {0: 25, 1: 25, 2: 25, 3: 25}
    # stored as a shard stores an image: a PNG entry and the label as ASCII digits
    assert Image.open(io.BytesIO(train[0]["png"])).format == "PNG" and train[0]["cls"] == b"0"


def test_images_depend_on_their_seed_and_split_only():
    first, again = splits("seed=1"), splits("seed=2")  # the run's seed does not change the data
    assert samples(first["train"]) == samples(again["train"])
    other = splits("data.synthetic.seed=1")
    pixels = [[s["png"] for s in samples(found["train"])] for found in (first, other)]
    assert not set(pixels[0]) & set(pixels[1])
    assert not {s["png"] for s in samples(first["val"])} & set(pixels[0])  # evaluation never sees training images


def test_the_loader_reads_them_like_shards_and_resumes_exactly():
    info = splits()["train"]
    loader = make_train_loader(info, batch_size=16, img_size=28, in_chans=1, num_workers=0, seed=3)
    epoch = list(loader.epoch(1))
    assert len(epoch) == len(loader) == 16
    assert all(images.shape == (16, 1, 28, 28) and images.dtype == torch.uint8 for images, _ in epoch)
    resumed = list(loader.epoch(1, start_batch=5))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(epoch[5:], resumed))
    assert loader.skipped == 0


def test_a_recipe_is_planned_on_them_without_its_data():
    cfg = load_config("imagenet/vit_tiny_kdyck", ["data.source=synthetic", "data.synthetic.samples=2048",
                                                   "data.num_workers=2"])
    assert describe_train(cfg.data) == (2048, 10)
    plan = preflight(cfg, world_size=1)
    assert [p.name for p in plan.phases] == ["warmup", "image"] and plan.num_classes == 10
