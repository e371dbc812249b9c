"""Fashion-MNIST as shards: reading its gzip IDX files and choosing class-balanced splits.

The four IDX files come from Debian's ``dataset-fashion-mnist`` package. They are split into ``train`` (the
60k training images minus a class-balanced held-out ``validation`` split) and ``test`` (the 10k t10k images),
so model selection never looks at the test split.
"""

from __future__ import annotations

import gzip
import json
import math
import os
from pathlib import Path

import numpy as np

from .shards import FORMAT_VERSION, staged, write_split
from .sources import read_info

FMNIST_SRC = "/usr/share/datasets/fashion-mnist"
FMNIST_NAME = "fashion_mnist"
FMNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
# Per-pixel statistics of the 60k Fashion-MNIST training images, scaled to [0, 1].
FMNIST_MEAN = (0.2860,)
FMNIST_STD = (0.3530,)
# The IDX files' names and the source split ("train" or "t10k") each belongs to.
_FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "t10k": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# Bumped whenever the written layout changes, so ensure_fmnist_shards rebuilds old sets.


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one (optionally gzip-compressed) IDX file into a uint8 array of the shape its header gives."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    # Header: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then one
    # big-endian uint32 per dimension.
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (header {data[:4]!r})")
    ndim = data[3]
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    if len(data) - offset != math.prod(shape):
        raise ValueError(f"{path}: header says shape {shape} but the file holds {len(data) - offset} bytes")
    return np.frombuffer(data, np.uint8, offset=offset).reshape(shape)


def load_fmnist(src: str | os.PathLike = FMNIST_SRC) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Return ``{"train": (images (60000, 28, 28) uint8, labels (60000,) uint8), "t10k": (...)}``."""
    src = Path(src)
    out = {}
    for part, (img_file, lbl_file) in _FMNIST_FILES.items():
        for f in (img_file, lbl_file):
            if not (src / f).is_file():
                raise FileNotFoundError(
                    f"Fashion-MNIST file {src / f} is missing; install the Debian package "
                    f"dataset-fashion-mnist or pass the directory holding the four IDX files")
        images, labels = read_idx(src / img_file), read_idx(src / lbl_file)
        if len(images) != len(labels):
            raise ValueError(f"{src}: {len(images)} {part} images but {len(labels)} labels")
        out[part] = (images, labels)
    return out


def balanced_split(labels: np.ndarray, n_take: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into a class-balanced random subset of ``n_take`` and the rest (both sorted).

    Each class gives ``n_take // C`` indices and the first ``n_take % C`` classes one more, so the result
    depends only on the labels and the generator's state.
    """
    classes = np.unique(labels)
    per_class = [n_take // len(classes) + (i < n_take % len(classes)) for i in range(len(classes))]
    taken = []
    for c, k in zip(classes, per_class):
        idx = np.flatnonzero(labels == c)
        if k > len(idx):
            raise ValueError(f"cannot take {k} samples of class {c}: it has only {len(idx)}")
        taken.append(rng.choice(idx, size=k, replace=False))
    taken = np.sort(np.concatenate(taken))
    rest = np.setdiff1d(np.arange(len(labels)), taken)
    return taken, rest


def balanced_fraction(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Keep ``round(fraction * n_c)`` random indices of every class c (sorted), at least one per class."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return np.arange(len(labels))
    kept = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        kept.append(rng.choice(idx, size=max(1, round(fraction * len(idx))), replace=False))
    return np.sort(np.concatenate(kept))


def fmnist_split_indices(
    labels: dict[str, np.ndarray], *, fraction: float = 1.0, val_size: int = 5000, seed: int = 0
) -> dict[str, tuple[str, np.ndarray]]:
    """Choose which IDX rows go to each output split: ``{split: (source part, row indices)}``.

    ``validation`` is a class-balanced draw of ``val_size`` rows of the 60k training file, ``train`` the rest
    (reduced to a class-balanced ``fraction`` of itself), ``test`` all of t10k. Rows are then put in a random
    order (fixed by ``seed``) so every shard mixes classes.
    """
    rng = np.random.default_rng(seed)
    val, train = balanced_split(labels["train"], val_size, rng)
    train = train[balanced_fraction(labels["train"][train], fraction, rng)]
    splits = {"train": ("train", train), "validation": ("train", val), "test": ("t10k", np.arange(len(labels["t10k"])))}
    return {s: (part, rng.permutation(idx)) for s, (part, idx) in splits.items() if len(idx)}


def write_fmnist_shards(
    out_dir: str | os.PathLike, *, src: str | os.PathLike = FMNIST_SRC, fraction: float = 1.0,
    val_size: int = 5000, shard_size: int = 1000, workers: int = 1, seed: int = 0, overwrite: bool = False,
    verify: bool = False, progress: bool = True,
) -> Path:
    """Write Fashion-MNIST as ``train``/``validation``/``test`` shards (PNG, lossless) into ``out_dir``.

    The set is built in a temporary directory next to ``out_dir`` and renamed into place at the end.
    Returns ``out_dir``.
    """
    out_dir = Path(out_dir)
    data = load_fmnist(src)
    build = _fmnist_build_params(fraction, val_size, shard_size, seed)
    splits = fmnist_split_indices({p: lbl for p, (_, lbl) in data.items()}, fraction=fraction, val_size=val_size,
                                  seed=seed)
    info = {"name": FMNIST_NAME, "num_classes": len(FMNIST_CLASSES), "classes": list(FMNIST_CLASSES),
            "mean": list(FMNIST_MEAN), "std": list(FMNIST_STD), "build": build, "splits": {}}
    with staged(out_dir, info, overwrite=overwrite, verify=verify, workers=workers, progress=progress) as tmp:
        for split, (part, rows) in splits.items():
            images, labels = data[part]
            # The key names the IDX row (e.g. "train_012345"), so a sample can always be traced to its source.
            items = [(f"{part}_{r:05d}", images[r], labels[r]) for r in rows]
            info["splits"][split] = write_split(tmp, FMNIST_NAME, split, items, shard_size=shard_size,
                                                workers=workers, progress=progress)
    return out_dir


def _fmnist_build_params(fraction: float, val_size: int, shard_size: int, seed: int) -> dict:
    return {"source": "fmnist", "format_version": FORMAT_VERSION, "fraction": float(fraction),
            "val_size": int(val_size), "shard_size": int(shard_size), "seed": int(seed)}


def ensure_fmnist_shards(
    out_dir: str | os.PathLike, *, fraction: float = 1.0, val_size: int = 5000, shard_size: int = 1000,
    seed: int = 0, src: str | os.PathLike = FMNIST_SRC, workers: int = 1, progress: bool = True,
) -> Path:
    """Return ``out_dir`` holding Fashion-MNIST shards built with these parameters, building them if needed.

    Idempotent and safe to call from several processes (ranks) at once: each builder writes into its own
    temporary directory and renames it into place; a process that loses the race finds the winner's
    ``_info.json`` and uses it. An ``out_dir`` holding a shard set with *other* parameters raises ValueError
    rather than being replaced (it may be in use by another run).
    """
    out_dir = Path(out_dir)
    params = dict(fraction=fraction, val_size=val_size, shard_size=shard_size, seed=seed)
    if not fmnist_shards_ready(out_dir, **params):
        try:
            write_fmnist_shards(out_dir, src=src, workers=workers, progress=progress, **params)
        except OSError:
            # FileExistsError / ENOTEMPTY: another process renamed its copy into place first (its parameters
            # are checked below). Anything else is a real failure.
            if not (out_dir / "_info.json").exists():
                raise
        fmnist_shards_ready(out_dir, **params)
    return out_dir


def fmnist_shards_ready(out_dir: str | os.PathLike, *, fraction: float = 1.0, val_size: int = 5000,
                        shard_size: int = 1000, seed: int = 0) -> bool:
    """Whether ``out_dir`` holds the Fashion-MNIST shard set of these parameters; False where it is absent or
    empty (``ensure_fmnist_shards`` would write it), ValueError where it holds anything else."""
    out_dir = Path(out_dir)
    want = _fmnist_build_params(fraction, val_size, shard_size, seed)
    try:
        have = read_info(out_dir).get("build")
    except FileNotFoundError:
        have = None
        if not (out_dir.exists() and any(out_dir.iterdir())):
            return False
    if have != want:
        raise ValueError(
            f"{out_dir} holds {'shards built with ' + json.dumps(have) if have else 'files that are no shard set'}, "
            f"not the requested {json.dumps(want)}; choose another directory or delete it")
    return True
