"""Synthetic images: a labelled image set that needs no data, read like shards.

``data.source=synthetic`` describes each split the run asks for as a ``DatasetInfo`` whose "shards" are
``synthetic://`` locations; ``synthetic_shard`` makes one such shard's samples exactly as a shard on disk
holds them (a PNG and its ``cls`` entry, ``vitwarm.data.reader.encode``), so they pass through the same
stream, shuffle buffer, decoder, transforms and loaders as real shards: a recipe runs end to end on a node
where its data is not staged yet, at its own image size and batch sizes.

Sample ``i`` of a split is a function of (``data.synthetic.seed``, split, ``i``) only: its label is
``i % classes`` (balanced), its pixels half the pattern of its class (seed purpose ``synthetic-class``) and
half its own noise (``synthetic``), so a model can learn the classes a little and a resumed run reads the
same images. The images say nothing about any data set; summary.json marks a run trained on them.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qsl, urlencode, urlparse

import numpy as np
from omegaconf import DictConfig

from ..seeds import derive_seed
from .reader import encode
from .sources import DatasetInfo

SYNTHETIC = "synthetic"
# Shards of a synthetic split: one per sample up to this many, so that even a few dozen samples make a
# shard for each of world_size x num_workers readers (every reader needs one of its own); beyond it, the
# samples are spread evenly (a list of a million locations would cost memory in every loader worker).
MAX_SHARDS = 1024


def split_info(options: DictConfig, split: str, num_samples: int) -> DatasetInfo:
    """Split ``split`` of ``num_samples`` synthetic images; ``options``: the config's ``data.synthetic``."""
    height, width = options.shape
    num_shards = min(num_samples, MAX_SHARDS)
    bounds = [i * num_samples // num_shards for i in range(num_shards + 1)]
    starts, lengths = bounds[:-1], [b - a for a, b in zip(bounds[:-1], bounds[1:])]
    query = dict(seed=options.seed, height=height, width=width, channels=options.channels, classes=options.classes)
    urls = [f"{SYNTHETIC}://{split}/{i:04d}?" + urlencode(query | {"first": start, "count": n})
            for i, (start, n) in enumerate(zip(starts, lengths))]
    return DatasetInfo(name=SYNTHETIC, split=split, urls=urls, num_samples=num_samples, shard_lengths=lengths,
                       num_classes=options.classes, classes=[f"class_{c}" for c in range(options.classes)])


def synthetic_splits(data: DictConfig) -> dict[str, DatasetInfo]:
    """The run's splits (as ``vitwarm.data.read_splits`` gives them) for ``data.source=synthetic``: the
    training split of ``data.synthetic.samples`` images, each evaluation split of ``eval_samples`` others."""
    options = data.synthetic
    splits = {"train": split_info(options, data.train_split, options.samples),
              "val": split_info(options, data.val_split, options.eval_samples)}
    if data.test_split is not None:
        splits["test"] = split_info(options, data.test_split, options.eval_samples)
    return splits


def is_synthetic(location: str) -> bool:
    """Whether ``location`` is a synthetic shard (``split_info``'s), not a file or URL."""
    return urlparse(location).scheme == SYNTHETIC


def synthetic_shard(location: str) -> Iterator[dict]:
    """The raw samples of one synthetic shard, as ``vitwarm.data.reader.read_shard`` yields a real one's."""
    url = urlparse(location)
    split = url.netloc
    q = {key: int(value) for key, value in parse_qsl(url.query)}
    # (H, W) for one channel, (H, W, 3) for RGB: the arrays PIL reads as gray and as RGB images.
    shape = (q["height"], q["width"]) + ((q["channels"],) if q["channels"] > 1 else ())
    for i in range(q["first"], q["first"] + q["count"]):
        label = i % q["classes"]
        pattern = np.random.default_rng(derive_seed(q["seed"], "synthetic-class", label)).integers(0, 128, shape)
        noise = np.random.default_rng(derive_seed(q["seed"], "synthetic", split, i)).integers(0, 128, shape)
        image = (pattern + noise).astype(np.uint8)
        yield {"__key__": f"{split}_{i:06d}", "__url__": location, **encode(image, label)}
