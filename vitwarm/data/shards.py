"""Writing and checking webdataset shards in timm's layout.

A shard set is a directory holding ``<name>-<split>-<NNNN>.tar`` files and an ``_info.json`` that timm's
webdataset reader (``timm.data.create_dataset("wds/<name>", root=DIR, split=...)``) understands::

    {"name": "fashion_mnist", "num_classes": 10, "classes": [...],
     "splits": {"train": {"name": "train", "num_samples": 55000,
                          "filenames": ["fashion_mnist-train-0000.tar", ...],
                          "shard_lengths": [1000, ...]}, ...},
     "mean": [...], "std": [...], "build": {...}}

Each sample holds ``__key__``, one image entry (``png`` for Fashion-MNIST, the source encoding such as ``jpg``
for image folders, kept byte for byte) and ``cls`` (the class index as ASCII digits). ``mean``/``std`` (when
known) and ``build`` (the parameters the set was written with) are vitwarm's additions; timm ignores them.

Fashion-MNIST is read from the four gzip IDX files of Debian's ``dataset-fashion-mnist`` package and split
into ``train`` (the 60k training images minus a class-balanced held-out ``validation`` split) and ``test``
(the 10k t10k images), so model selection never looks at the test split.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import logging
import math
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm
from webdataset.tariterators import base_plus_ext

from .sources import INFO_NAME, check_name, read_info

log = logging.getLogger(__name__)

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
FORMAT_VERSION = 1
IMAGE_EXTENSIONS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp"}


# ---------------------------------------------------------------------------------------------------------
# Fashion-MNIST source


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


# ---------------------------------------------------------------------------------------------------------
# Writing


def shard_filenames(name: str, split: str, num_shards: int) -> list[str]:
    """timm's naming: ``<name>-<split>-0000.tar`` ... (at least 4 digits)."""
    width = max(4, len(str(num_shards - 1)))
    return [f"{name}-{split}-{i:0{width}d}.tar" for i in range(num_shards)]


def _encode_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o444
    tar.addfile(info, io.BytesIO(data))


def _write_shard(job: tuple[str, list[tuple]]) -> int:
    """Write one shard; ``job = (path, items)``, item = ``(key, image, label)``.

    ``image`` is a uint8 array (encoded here as PNG) or the path of an encoded image file (copied as is, its
    extension naming the entry). Returns the number of samples written.
    """
    path, items = job
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for key, image, label in items:
            if isinstance(image, np.ndarray):
                ext, data = "png", _encode_png(image)
            else:
                ext, data = IMAGE_EXTENSIONS[Path(image).suffix.lower()], Path(image).read_bytes()
            _add_member(tar, f"{key}.{ext}", data)
            _add_member(tar, f"{key}.cls", str(int(label)).encode("ascii"))
    return len(items)


def _run_jobs(fn: Callable, jobs: Sequence, workers: int, desc: str, progress: bool) -> list:
    """Run ``fn`` over ``jobs`` in ``workers`` processes (in-process for workers <= 1), with a progress bar."""
    bar = tqdm(total=len(jobs), desc=desc, unit="shard", disable=not progress)
    try:
        if workers <= 1 or len(jobs) <= 1:
            results = []
            for job in jobs:
                results.append(fn(job))
                bar.update()
            return results
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            results = []
            for r in pool.map(fn, jobs):
                results.append(r)
                bar.update()
            return results
    finally:
        bar.close()


def write_split(
    out_dir: Path, name: str, split: str, items: Sequence[tuple], *, shard_size: int, workers: int = 1,
    progress: bool = True,
) -> dict:
    """Write ``items`` (see ``_write_shard``) as shards of about ``shard_size`` samples; return the split info.

    The items are cut into ``ceil(n / shard_size)`` shards whose lengths differ by at most one, so that
    workers reading different shards get (nearly) the same number of samples.
    """
    check_name(name, "shard set name")
    check_name(split, "split name")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if not items:
        raise ValueError(f"split {split!r} of {name!r} has no samples")
    num_shards = math.ceil(len(items) / shard_size)
    bounds = np.linspace(0, len(items), num_shards + 1).round().astype(int)
    names = shard_filenames(name, split, num_shards)
    jobs = [(str(out_dir / f), list(items[a:b])) for f, a, b in zip(names, bounds[:-1], bounds[1:])]
    lengths = _run_jobs(_write_shard, jobs, workers, f"{name}/{split}", progress)
    return {"name": split, "num_samples": int(sum(lengths)), "filenames": names, "shard_lengths": lengths}


def _write_info(out_dir: Path, info: dict) -> None:
    (out_dir / INFO_NAME).write_text(json.dumps(info, indent=1) + "\n")


def _publish(tmp_dir: Path, out_dir: Path, overwrite: bool) -> None:
    """Move the finished ``tmp_dir`` to ``out_dir`` in one rename, so readers never see half a shard set."""
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out_dir} exists and is not empty; pass overwrite=True (--overwrite) to replace it")
        shutil.rmtree(out_dir)
    elif out_dir.exists():
        out_dir.rmdir()
    # mkdtemp made the folder private (0700); a published shard set is readable like any other directory.
    umask = os.umask(0)
    os.umask(umask)
    tmp_dir.chmod(0o777 & ~umask)
    os.rename(tmp_dir, out_dir)


def _temp_dir_beside(out_dir: Path) -> Path:
    # Same parent directory, so the final rename stays on one file system (and is atomic).
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))


@contextlib.contextmanager
def _staged(out_dir: Path, info: dict, *, overwrite: bool, verify: bool, workers: int, progress: bool):
    """Yield a temporary folder beside ``out_dir`` to write shards into; when the body succeeds, write ``info``
    (filled in by the body) as _info.json, optionally verify, and publish the folder in one rename."""
    tmp = _temp_dir_beside(out_dir)
    try:
        yield tmp
        _write_info(tmp, info)
        if verify:
            verify_shards(tmp, workers=workers, progress=progress)
        _publish(tmp, out_dir, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
    with _staged(out_dir, info, overwrite=overwrite, verify=verify, workers=workers, progress=progress) as tmp:
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
    want = _fmnist_build_params(fraction, val_size, shard_size, seed)

    def existing() -> dict | None:
        try:
            return read_info(out_dir).get("build")
        except FileNotFoundError:
            return None

    have = existing()
    if have is None and not (out_dir.exists() and any(out_dir.iterdir())):
        try:
            write_fmnist_shards(out_dir, src=src, fraction=fraction, val_size=val_size, shard_size=shard_size,
                                workers=workers, seed=seed, progress=progress)
        except OSError:
            # FileExistsError / ENOTEMPTY: another process renamed its copy into place first (its parameters
            # are checked below). Anything else is a real failure.
            if existing() is None:
                raise
        have = existing()
    if have != want:
        raise ValueError(
            f"{out_dir} holds {'shards built with ' + json.dumps(have) if have else 'files that are no shard set'}, "
            f"not the requested {json.dumps(want)}; choose another directory or delete it")
    return out_dir


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
    with _staged(out_dir, info, overwrite=overwrite, verify=verify, workers=workers, progress=progress) as tmp:
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


# ---------------------------------------------------------------------------------------------------------
# Verifying


def _check_shard(job: tuple[str, int, int]) -> list[str]:
    """Read one whole shard and return its problems (empty list when sound). ``job = (path, length, C)``."""
    path, expected, num_classes = job
    problems, count = [], 0
    try:
        with tarfile.open(path, "r") as tar:
            samples: dict[str, dict[str, bytes]] = {}
            for member in tar:
                if member.isfile():
                    key, ext = base_plus_ext(member.name)
                    samples.setdefault(key, {})[ext.lower()] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        return [f"{path}: unreadable ({e})"]
    for key, sample in samples.items():
        count += 1
        image_keys = [k for k in ("jpg", "png", "webp") if k in sample]
        try:
            label = int(sample["cls"])
            if not 0 <= label < num_classes:
                problems.append(f"{path}: sample {key} has label {label} outside [0, {num_classes})")
            with Image.open(io.BytesIO(sample[image_keys[0]])) as img:
                img.load()
        except (KeyError, IndexError, ValueError, OSError) as e:
            problems.append(f"{path}: sample {key} is broken ({type(e).__name__}: {e})")
    if count != expected:
        problems.append(f"{path}: holds {count} samples but {INFO_NAME} says {expected}")
    return problems


def verify_shards(root: str | os.PathLike, splits: Sequence[str] | None = None, *, workers: int = 1,
                  progress: bool = True) -> dict[str, int]:
    """Re-read every shard of ``root`` and check sample counts, labels and image decoding against ``_info.json``.

    Returns ``{split: num_samples}``; raises ValueError listing every problem found.
    """
    root = Path(root)
    info = read_info(root)
    splits = list(info["splits"]) if splits is None else list(splits)
    jobs, problems = [], []
    for s in splits:
        si = info["splits"][s]
        if sum(si["shard_lengths"]) != si["num_samples"]:
            problems.append(f"split {s}: shard_lengths add up to {sum(si['shard_lengths'])}, "
                            f"num_samples says {si['num_samples']}")
        jobs += [(str(root / f), n, info["num_classes"]) for f, n in zip(si["filenames"], si["shard_lengths"])]
    for p in _run_jobs(_check_shard, jobs, workers, "verify", progress):
        problems += p
    if problems:
        raise ValueError(f"{len(problems)} problem(s) in {root}:\n" + "\n".join(problems))
    return {s: info["splits"][s]["num_samples"] for s in splits}
