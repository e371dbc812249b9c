"""Image folders (torchvision's ImageFolder layout) as shards, each image's encoded bytes kept as they are."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .shards import FORMAT_VERSION, IMAGE_EXTENSIONS, staged, write_split


def scan_folder(src: str | os.PathLike, classes: Sequence[str] | None = None) -> tuple[list[str], list[tuple]]:
    """List an ImageFolder tree ``src/<class>/**/<image>``: ``(class names, [(path, label), ...])``.

    Class indices follow the sorted class directory names (torchvision's ImageFolder convention) unless
    ``classes`` gives them (used so a validation tree gets the training tree's indices).
    """
    src = Path(src)
    found = sorted(d.name for d in src.iterdir() if d.is_dir())
    if not found:
        raise ValueError(f"{src} has no class subdirectories")
    classes = list(classes) if classes is not None else found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ValueError(f"{src}: class directories {unknown} are not among the training classes {classes}")
    items = []
    for label, cls in enumerate(classes):
        if not (src / cls).is_dir():
            continue
        for f in sorted((src / cls).rglob("*")):
            if not f.is_file():
                continue
            if f.suffix.lower() not in IMAGE_EXTENSIONS:
                raise ValueError(f"{f}: unsupported image type; expected one of {sorted(IMAGE_EXTENSIONS)}")
            items.append((str(f), label))
    if not items:
        raise ValueError(f"{src} holds no images")
    return classes, items


def write_folder_shards(
    src: str | os.PathLike, out_dir: str | os.PathLike, *, name: str, split: str | None = None,
    shard_size: int = 1000, workers: int = 1, seed: int = 0, overwrite: bool = False, verify: bool = False,
    progress: bool = True,
) -> Path:
    """Write an ImageFolder tree as shards, keeping each image's encoded bytes.

    ``src`` either holds ``train/`` and ``val/`` (or ``validation/``) subtrees, written as splits ``train``
    and ``validation``, or is a single class tree written as split ``split``. Samples are put in a random
    order fixed by ``seed``; keys are ``<split>_<index>``.
    """
    src, out_dir = Path(src), Path(out_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"image folder {src} does not exist")
    if split is not None:
        trees = {split: src}
    else:
        trees = {"train": src / "train"}
        val = [src / v for v in ("validation", "val") if (src / v).is_dir()]
        if val:
            trees["validation"] = val[0]
        if not trees["train"].is_dir():
            raise ValueError(f"{src} has no train/ subdirectory; pass split=NAME (--split) for a single class tree")
    classes = None
    info = {"name": name, "splits": {}}
    with staged(out_dir, info, overwrite=overwrite, verify=verify, workers=workers, progress=progress) as tmp:
        rng = np.random.default_rng(seed)
        for s, tree in trees.items():
            classes, files = scan_folder(tree, classes)
            order = rng.permutation(len(files))
            items = [(f"{s}_{i:07d}", files[j][0], files[j][1]) for i, j in enumerate(order)]
            info["splits"][s] = write_split(tmp, name, s, items, shard_size=shard_size, workers=workers,
                                            progress=progress)
        info.update(num_classes=len(classes), classes=classes,
                    build={"source": "folder", "format_version": FORMAT_VERSION, "shard_size": shard_size,
                           "seed": seed})
    return out_dir
