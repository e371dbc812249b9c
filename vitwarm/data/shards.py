"""Writing shard sets in timm's webdataset layout: tar members, the ``_info.json``, and publishing a finished
set in one rename.

A shard set is a directory holding ``<name>-<split>-<NNNN>.tar`` files and an ``_info.json`` that timm's
webdataset reader (``timm.data.create_dataset("wds/<name>", root=DIR, split=...)``) understands::

    {"name": "fashion_mnist", "num_classes": 10, "classes": [...],
     "splits": {"train": {"name": "train", "num_samples": 55000,
                          "filenames": ["fashion_mnist-train-0000.tar", ...],
                          "shard_lengths": [1000, ...]}, ...},
     "mean": [...], "std": [...], "build": {...}}

Each sample holds ``__key__``, one image entry (``png`` for arrays, the source encoding such as ``jpg`` for
image files, kept byte for byte) and ``cls`` (the class index as ASCII digits). ``mean``/``std`` (when
known) and ``build`` (the parameters the set was written with) are vitwarm's additions; timm ignores them.
The converters (vitwarm.data.fmnist, .folder, .convert_torchvision) fill a ``staged`` folder with
``write_split``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .jobs import run_jobs
from .reader import encode
from .sources import INFO_NAME, check_name
from .verify import verify_shards

# Bumped whenever the written layout changes, so ensure_fmnist_shards rebuilds old sets.
FORMAT_VERSION = 1
IMAGE_EXTENSIONS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp"}


def shard_filenames(name: str, split: str, num_shards: int) -> list[str]:
    """timm's naming: ``<name>-<split>-0000.tar`` ... (at least 4 digits)."""
    width = max(4, len(str(num_shards - 1)))
    return [f"{name}-{split}-{i:0{width}d}.tar" for i in range(num_shards)]


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
                entries = encode(image, label)
            else:
                entries = {IMAGE_EXTENSIONS[Path(image).suffix.lower()]: Path(image).read_bytes(),
                           "cls": str(int(label)).encode("ascii")}
            for ext, data in entries.items():
                _add_member(tar, f"{key}.{ext}", data)
    return len(items)


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
    lengths = run_jobs(_write_shard, jobs, workers, f"{name}/{split}", progress)
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
def staged(out_dir: Path, info: dict, *, overwrite: bool, verify: bool, workers: int, progress: bool):
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
