"""The paper's smaller data sets, from torchvision's on-disk formats to shards in timm's layout.

Each converter reads a local ``root`` through torchvision's own dataset class with ``download=False`` (so
torchvision's file checks apply: its MD5 sums for CIFAR and STL-10) and writes the same layout and
``_info.json`` as ``write_fmnist_shards`` (through `vitwarm.data.shards`). The official splits are kept as they
are; the held-out split is named as in timm's shards of the same data set where there is one:

| command | root (as torchvision expects it) | splits written | classes |
|---|---|---|---|
| ``cifar10`` | folder holding ``cifar-10-batches-py/`` | train 50,000, test 10,000 | 10 |
| ``cifar100`` | folder holding ``cifar-100-python/`` | train 50,000, test 10,000 | 100 (fine labels) |
| ``stl10`` | folder holding ``stl10_binary/`` | train 5,000, test 8,000 (unlabeled not written) | 10 |
| ``food101`` | folder holding ``food-101/`` (``meta/``, ``images/``) | train 75,750, test 25,250 | 101 |
| ``tiny_imagenet`` | the ``tiny-imagenet-200/`` folder | train 100,000, validation 10,000 | 200 |

CIFAR and STL-10 images are stored losslessly as PNG (they are arrays in the source files); Food-101 and
Tiny-ImageNet JPEGs are copied byte for byte. Tiny-ImageNet has no torchvision class: its ``train/`` tree
is read with ``ImageFolder`` and ``val/`` through its ``val_annotations.txt``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from torchvision.datasets import CIFAR10, CIFAR100, STL10, Food101, ImageFolder

from .shards import FORMAT_VERSION, staged, write_split


def _open(cls: type, root: str | os.PathLike, **kwargs):
    """``cls(root, download=False, **kwargs)``, its "not found or corrupted" RuntimeError made specific."""
    try:
        return cls(str(root), download=False, **kwargs)
    except RuntimeError as err:
        raise FileNotFoundError(f"{cls.__name__} under {root}: {err} (the folder each data set needs is listed in "
                                f"vitwarm.data.convert_torchvision; CIFAR and STL-10 files must match torchvision's "
                                f"MD5 sums)") from None


def _array_items(images: np.ndarray, labels: Sequence[int]) -> list[tuple]:
    """``(index, image (H, W, C) uint8, label)`` per sample, encoded as PNG by the shard writer."""
    return [(i, image, int(label)) for i, (image, label) in enumerate(zip(images, labels))]


def _cifar(cls: type, root: str | os.PathLike) -> tuple[list[str], dict[str, list[tuple]]]:
    splits = {}
    for split, train in (("train", True), ("test", False)):
        ds = _open(cls, root, train=train)
        splits[split] = _array_items(ds.data, ds.targets)  # data: (N, 32, 32, 3) uint8
    return list(ds.classes), splits


def read_cifar10(root: str | os.PathLike) -> tuple[list[str], dict[str, list[tuple]]]:
    """CIFAR-10 as ``(class names, {split: items})``; ``root`` holds ``cifar-10-batches-py/``."""
    return _cifar(CIFAR10, root)


def read_cifar100(root: str | os.PathLike) -> tuple[list[str], dict[str, list[tuple]]]:
    """CIFAR-100 (fine labels) as ``(class names, {split: items})``; ``root`` holds ``cifar-100-python/``."""
    return _cifar(CIFAR100, root)


def read_stl10(root: str | os.PathLike) -> tuple[list[str], dict[str, list[tuple]]]:
    """STL-10's labelled splits as ``(class names, {split: items})``; ``root`` holds ``stl10_binary/``."""
    splits = {}
    for split in ("train", "test"):
        ds = _open(STL10, root, split=split)
        splits[split] = _array_items(ds.data.transpose(0, 2, 3, 1), ds.labels)  # (N, 3, 96, 96) -> NHWC
    return list(ds.classes), splits


def read_food101(root: str | os.PathLike) -> tuple[list[str], dict[str, list[tuple]]]:
    """Food-101 as ``(class names, {split: items})``, items naming the JPEG files; ``root`` holds ``food-101/``."""
    splits = {}
    for split in ("train", "test"):
        ds = _open(Food101, root, split=split)
        # torchvision keeps the file list private; the files are copied, not decoded and re-encoded.
        splits[split] = [(i, str(f), int(y)) for i, (f, y) in enumerate(zip(ds._image_files, ds._labels))]
    return list(ds.classes), splits


def read_tiny_imagenet(root: str | os.PathLike) -> tuple[list[str], dict[str, list[tuple]]]:
    """Tiny-ImageNet as ``(wnids, {split: items})``; ``root`` is ``tiny-imagenet-200/`` (train/, val/)."""
    root = Path(root)
    annotations = root / "val" / "val_annotations.txt"
    if not (root / "train").is_dir() or not annotations.is_file():
        raise FileNotFoundError(f"{root} is not a tiny-imagenet-200 folder: it needs train/ and "
                                f"val/val_annotations.txt")
    train = ImageFolder(str(root / "train"))  # train/<wnid>/images/*.JPEG; class index = sorted wnid
    val = []
    for line in annotations.read_text().splitlines():  # file \t wnid \t x0 \t y0 \t x1 \t y1
        name, wnid = line.split("\t")[:2]
        if wnid not in train.class_to_idx:
            raise ValueError(f"{annotations}: {name} has class {wnid}, which has no train/ folder")
        val.append((str(root / "val" / "images" / name), train.class_to_idx[wnid]))
    splits = {"train": train.samples, "validation": sorted(val)}
    return list(train.classes), {s: [(i, f, y) for i, (f, y) in enumerate(items)] for s, items in splits.items()}


READERS: dict[str, Callable] = {
    "cifar10": read_cifar10, "cifar100": read_cifar100, "stl10": read_stl10, "food101": read_food101,
    "tiny_imagenet": read_tiny_imagenet,
}


def write_torchvision_shards(
    source: str, root: str | os.PathLike, out_dir: str | os.PathLike, *, name: str | None = None,
    shard_size: int = 1000, workers: int = 1, seed: int = 0, overwrite: bool = False, verify: bool = False,
    progress: bool = True,
) -> Path:
    """Write data set ``source`` (a `READERS` key) read from ``root`` as shards in ``out_dir``; returns it.

    Samples of each split go in a random order fixed by ``seed``; keys are ``<split>_<source index>``, so
    a sample can be traced to its place in the source. ``name`` (default: ``source``) prefixes the files.
    """
    if source not in READERS:
        raise ValueError(f"unknown data set {source!r}; choose from {sorted(READERS)}")
    name = name or source
    out_dir = Path(out_dir)
    classes, splits = READERS[source](root)
    info = {"name": name, "num_classes": len(classes), "classes": classes, "splits": {},
            "build": {"source": source, "format_version": FORMAT_VERSION, "shard_size": shard_size, "seed": seed}}
    with staged(out_dir, info, overwrite=overwrite, verify=verify, workers=workers, progress=progress) as tmp:
        rng = np.random.default_rng(seed)
        for split, items in splits.items():
            order = rng.permutation(len(items))
            keyed = [(f"{split}_{items[j][0]:06d}", *items[j][1:]) for j in order]
            info["splits"][split] = write_split(tmp, name, split, keyed, shard_size=shard_size, workers=workers,
                                                progress=progress)
    return out_dir
