"""Training and validation loaders over webdataset shards (timm's layout), deterministic and resumable.

Sources: a shard directory holding ``_info.json`` (split chosen by name), or a brace pattern of local shard
files such as ``DIR/imagenet1k-train-{0000..1023}.tar``, optionally followed by ``|N`` (the sample count);
without ``|N`` the counts come from an ``_info.json`` beside the shards.

Training order (see docs/data.md for the full argument). With ``W = max(1, num_workers)`` logical workers
per rank and ``L = len(loader)`` batches per epoch and rank:

* the split's shards are permuted with a seed made of (seed, epoch); rank r takes every ``world_size``-th
  shard starting at r, and logical worker w of that rank every W-th of those starting at w;
* a worker reads its shards in that order through a sample shuffle buffer seeded by (seed, epoch, rank, w);
  when its shards run out it continues with another pass over them in a new order (seeded by the pass
  number), so it can always fill its quota;
* batch i of the rank's epoch is the (i // W)-th batch of logical worker i % W. Batches are assembled inside
  the workers and torch's DataLoader hands them out round-robin, so this holds for any timing;
* each batch's augmentation runs under random / numpy / torch seeds made of (seed, epoch, rank, w, batch).

Resuming at batch k: DataLoader worker j plays logical worker (j + k) % W, so the first batch handed out is
batch k; each logical worker drops the raw (undecoded) samples of the batches it made before k, which costs
reading tar bytes but no image decoding or augmentation.

Faults: a sample that does not decode or has a bad label, and the unread rest of a truncated or unreadable
shard, are skipped with a warning and counted (``loader.skipped``; the counts travel from the workers with
each batch); with ``strict=True`` they raise instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import posixpath
import random
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import count, islice
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.shardlists import expand_urls
from webdataset.tariterators import base_plus_ext

from ..config import AugConfig
from .sources import (
    INFO_NAME,
    DataError,
    check_location,
    is_remote,
    join,
    open_location,
    parent,
    read_info,
    shard_name,
)
from .transforms import ImageTransform

log = logging.getLogger(__name__)

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
# Raw samples read ahead per worker for shuffling. 2000 ImageNet JPEGs are ~220 MB of bytes per worker.
DEFAULT_SHUFFLE_BUFFER = 2000
# A worker that fails this many samples in a row is reading garbage, not a few bad samples: stop it.
MAX_CONSECUTIVE_FAULTS = 1000
Batch = tuple[torch.Tensor, torch.Tensor]


class SampleError(DataError):
    """A sample or shard could not be read (raised in strict mode, counted and skipped otherwise)."""


@dataclass
class DatasetInfo:
    """What is known about one split: shard paths, sample counts, classes and normalisation statistics."""

    name: str
    split: str
    urls: list[str]
    num_samples: int
    shard_lengths: list[int] | None  # per shard, None when only a total (``|N``) is known
    num_classes: int | None = None
    classes: list[str] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


def _check_files(urls: list[str], source: str) -> None:
    # Remote shards are not fetched twice: a missing one shows when it is read (a fault, see _read_shard).
    missing = [u for u in urls if not is_remote(u) and not Path(u).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(urls)} shard(s) of {source} are missing, e.g. {missing[0]}")


def split_count(source: str) -> tuple[str, int | None]:
    """``"PATTERN|N"`` -> ``(PATTERN, N)``; a source without a trailing ``|N`` -> ``(source, None)``.

    Only a trailing count of digits counts, so a ``pipe:`` command may contain shell pipes itself.
    """
    head, sep, tail = source.rpartition("|")
    return (head, int(tail)) if sep and tail.strip().isdigit() else (source, None)


def is_pattern(source: str) -> bool:
    """A brace pattern or list of shard files (``.tar``, optionally ``|N``), not a directory or _info.json."""
    pattern, n = split_count(source)
    return "{" in pattern or n is not None or pattern.endswith(".tar") or pattern.startswith("pipe:")


def _info_beside(root: str) -> dict:
    """The ``_info.json`` in the shards' directory, or {} when there is none (or, for pipe: sources, no directory)."""
    if urlparse(root).scheme == "pipe":
        return {}
    try:
        return read_info(root)
    except FileNotFoundError:
        return {}


def read_dataset_info(source: str | os.PathLike, split: str = "train", info: str | None = None) -> DatasetInfo:
    """Describe ``split`` of ``source``: a shard directory or its ``_info.json``, or a brace pattern of shards.

    Directories, ``_info.json`` files and shards may be local paths or URLs (see vitwarm.data.sources). A
    pattern takes its counts, classes and statistics from ``info`` (an ``_info.json`` location, for shards
    without one beside them such as ``pipe:`` commands), else from the ``_info.json`` beside its shards, if
    any; its shards must be those of ``split`` when that file lists them. Raises
    FileNotFoundError for a missing local directory, ``_info.json`` or shard file, and DataError for an unknown
    split, an empty pattern, a pattern without a known sample count, or counts that disagree.
    """
    source = str(source)
    if not source.strip():
        raise DataError("empty data source: give a shard directory or a pattern like DIR/name-train-{0000..0009}.tar")
    check_location(source)
    if not is_pattern(source):
        root = parent(source) if source.endswith(INFO_NAME) else source
        if not is_remote(root) and not Path(root).is_dir():
            raise FileNotFoundError(f"shard directory {root} does not exist")
        meta = read_info(source)
        if split not in meta["splits"]:
            raise DataError(f"split {split!r} is not in {join(root, INFO_NAME)}; valid: {sorted(meta['splits'])}")
        s = meta["splits"][split]
        urls, lengths, total = [join(root, f) for f in s["filenames"]], list(s["shard_lengths"]), s["num_samples"]
        _check_files(urls, source)
    else:
        pattern, n = split_count(source)
        urls = expand_urls(pattern) if pattern.strip() else []
        if not urls:
            raise DataError(f"shard pattern {source!r} expands to no files")
        _check_files(urls, source)
        root = parent(urls[0])
        meta = read_info(info) if info is not None else _info_beside(root)
        known = {f: (name, n_f) for name, s in meta.get("splits", {}).items()
                 for f, n_f in zip(s["filenames"], s["shard_lengths"])}
        names = [shard_name(u) for u in urls]
        if all(f in known for f in names):
            lengths = [known[f][1] for f in names]
            found = sorted({known[f][0] for f in names})
            if found != [split]:
                raise DataError(f"shard pattern {source!r} holds shards of split {' and '.join(found)} (says "
                                f"{info or join(root, INFO_NAME)}), not of split {split!r}")
        else:
            lengths = None
        total = n if n is not None else (sum(lengths) if lengths is not None else None)
        if total is None:
            raise DataError(f"shard pattern {source!r} needs a sample count: append '|N', or put an {INFO_NAME} "
                            f"listing these shards beside them or give its location (data.info)")
    if lengths is not None and sum(lengths) != total:
        raise DataError(f"{source}: shard lengths add up to {sum(lengths)} samples but the count given is {total}")
    return DatasetInfo(
        name=meta.get("name", posixpath.basename(root.rstrip("/"))), split=split, urls=urls,
        num_samples=int(total), shard_lengths=lengths, num_classes=meta.get("num_classes"),
        classes=meta.get("classes"), mean=tuple(meta["mean"]) if "mean" in meta else None,
        std=tuple(meta["std"]) if "std" in meta else None)


# ---------------------------------------------------------------------------------------------------------
# Reading samples


def _seed_of(*parts) -> int:
    """A 64-bit seed from any tuple of ints/strings, the same in every process (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little")


@contextlib.contextmanager
def _seeded(seed: int):
    """Seed Python's, numpy's and torch's (CPU) global generators for the block, then restore their states.

    timm's transforms draw from all three; restoring matters when there are no workers and the block runs in
    the training process. Only the CPU torch generator is touched (CUDA streams of the caller are not).
    """
    # timm's RandAugment draws from numpy's legacy global generator, so that one must be seeded.
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)  # noqa: NPY002
        torch.default_generator.manual_seed(seed % 2**63)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)  # noqa: NPY002


class _Faults:
    """Counts skipped samples in one process; ``take()`` returns the count since the last call."""

    def __init__(self, strict: bool):
        self.strict, self.pending, self.consecutive = strict, 0, 0

    def report(self, message: str) -> None:
        if self.strict:
            raise SampleError(message + " (strict=True; pass strict=False to skip and count such faults)")
        log.warning("skipping: %s", message)
        self.pending += 1
        self.consecutive += 1
        if self.consecutive >= MAX_CONSECUTIVE_FAULTS:
            raise SampleError(f"{self.consecutive} faulty samples in a row; the shards look broken ({message})")

    def take(self) -> int:
        n, self.pending = self.pending, 0
        return n


def _read_shard(url: str, expected: int | None, faults: _Faults) -> Iterator[dict]:
    """Yield the raw samples (``{"__key__", ext: bytes, ...}``) of one shard in file order.

    A shard that breaks off (truncated, unreadable) is reported as one fault and ends there. A shard read
    to its end whose sample count differs from ``expected`` (from ``_info.json``) raises DataError: the
    metadata is wrong, and training on it would silently change the epoch.
    """
    n, sample = 0, None
    try:
        with open_location(url) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                key, ext = base_plus_ext(member.name) if member.isfile() else (None, None)
                if key is None:
                    continue
                data = tar.extractfile(member).read()
                if sample is not None and key != sample["__key__"]:
                    yield sample
                    n += 1
                    sample = None
                if sample is None:
                    sample = {"__key__": key, "__url__": url}
                sample[ext.lower()] = data
    except (tarfile.TarError, OSError, EOFError) as e:
        faults.report(f"shard {url} broke off after {n} samples ({type(e).__name__}: {e})")
        return
    if sample is not None:
        yield sample
        n += 1
    if expected is not None and n != expected:
        raise DataError(f"shard {url} holds {n} samples but {INFO_NAME} says {expected}; "
                         f"rewrite the shards or fix {INFO_NAME} (make_shards.py verify checks every shard)")


def _decode(sample: dict, num_classes: int | None, faults: _Faults) -> tuple[Image.Image, int] | None:
    """Raw sample -> (PIL image, label), or None (reported as a fault) when it is broken."""
    try:
        label = int(sample["cls"])
        if num_classes is not None and not 0 <= label < num_classes:
            raise ValueError(f"label {label} outside [0, {num_classes})")
        data = next(sample[k] for k in IMAGE_KEYS if k in sample)
        img = Image.open(io.BytesIO(data))
        img.load()
    except (KeyError, StopIteration, ValueError, OSError, Image.DecompressionBombError) as e:
        faults.report(f"sample {sample['__key__']} of {sample['__url__']} ({type(e).__name__}: {e})")
        return None
    faults.consecutive = 0
    return img, label


def _buffer_shuffle(samples: Iterator[dict], size: int, rng: random.Random) -> Iterator[dict]:
    """Fill a buffer of ``size`` samples, then repeatedly emit a random one and refill its slot."""
    buf = list(islice(samples, size))
    for s in samples:
        i = rng.randrange(len(buf))
        yield buf[i]
        buf[i] = s
    rng.shuffle(buf)
    yield from buf


def _worker_slot() -> tuple[int, int]:
    """(DataLoader worker id, number of workers); (0, 1) in the main process."""
    wi = get_worker_info()
    return (0, 1) if wi is None else (wi.id, wi.num_workers)


class _Stream(IterableDataset):
    """Yields ``(images, labels, skipped)`` batches of one rank's part of one epoch (see module docstring), and
    last the DataError that stopped it, if one did."""

    def __init__(self, info: DatasetInfo, transform: ImageTransform, *, training: bool, batch_size: int,
                 rank: int, world_size: int, seed: int, num_batches: int, shuffle_buffer: int, strict: bool,
                 logical_workers: int = 1):
        super().__init__()
        self.info, self.transform, self.training = info, transform, training
        self.batch_size, self.rank, self.world_size, self.seed = batch_size, rank, world_size, seed
        self.num_batches, self.shuffle_buffer, self.strict = num_batches, shuffle_buffer, strict
        self.logical_workers = logical_workers
        # Set by TrainLoader.epoch before each DataLoader iteration (workers are started afresh for each).
        self.epoch, self.start_batch = 0, 0

    def _shards(self, order: Sequence[int]) -> list[tuple[str, int | None]]:
        lengths = self.info.shard_lengths or [None] * len(self.info.urls)
        return [(self.info.urls[i], lengths[i]) for i in order]

    def _batch(self, samples: Iterator[dict], faults: _Faults, seed: int) -> Batch | None:
        """Decode and transform up to batch_size samples (fewer only when ``samples`` runs out)."""
        images, labels = [], []
        with _seeded(seed):
            for s in samples:
                decoded = _decode(s, self.info.num_classes, faults)
                if decoded is not None:
                    images.append(self.transform(decoded[0]))
                    labels.append(decoded[1])
                    if len(images) == self.batch_size:
                        break
        if not images:
            return None
        return torch.stack(images), torch.tensor(labels, dtype=torch.int64)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        # Not a generator itself: epoch and start_batch are read now, not at the first next().
        faults = _Faults(self.strict)
        if self.training:
            return self._with_faults(self._train_batches(faults, self.epoch, self.start_batch), faults)
        return self._with_faults(self._val_batches(faults), faults)

    @staticmethod
    def _with_faults(batches: Iterator[Batch], faults: _Faults) -> Iterator:
        try:
            for images, labels in batches:
                yield images, labels, faults.take()
        except DataError as err:
            # Raised in a DataLoader worker, torch would re-raise it wrapped in its own text and the worker's
            # traceback; handed over as an item, it is re-raised as itself by the loader (_Loader._count_skipped).
            yield err

    def _train_batches(self, faults: _Faults, epoch: int, start_batch: int) -> Iterator[Batch]:
        # Logical worker w, rotated so that batch start_batch comes first. There are always max(1,
        # num_workers) logical workers; near the end of an epoch fewer processes may play them.
        j, num_workers = _worker_slot()[0], self.logical_workers
        w = (j + start_batch) % num_workers
        order = list(range(len(self.info.urls)))
        random.Random(_seed_of(self.seed, "shards", epoch)).shuffle(order)
        mine = order[self.rank::self.world_size][w::num_workers]
        tag = (self.seed, epoch, self.rank, w)

        def passes() -> Iterator[dict]:
            # Each pass goes through the shuffle buffer on its own (the buffer drains at the pass's end), so
            # a worker whose shards hold exactly its quota emits each of its samples exactly once.
            rng = random.Random(_seed_of(*tag, "buffer"))
            for p in count():
                shards = list(mine)
                if p:
                    random.Random(_seed_of(*tag, "pass", p)).shuffle(shards)
                raw = (s for url, expected in self._shards(shards) for s in _read_shard(url, expected, faults))
                n = 0
                for s in _buffer_shuffle(raw, self.shuffle_buffer, rng):
                    n += 1
                    yield s
                if n == 0:
                    urls = [self.info.urls[i] for i in mine]
                    raise SampleError(f"none of the {len(urls)} shard(s) read by rank {self.rank} worker {w} gave a "
                                      f"sample, e.g. {urls[0]}: the shards look broken (make_shards.py verify "
                                      f"checks them)")

        samples = passes()
        # The worker makes this rank's batches w, w + W, w + 2W, ... below num_batches; the ones before
        # start_batch were made by the interrupted run: drop their raw samples undecoded.
        done = len(range(w, start_batch, num_workers))
        total = len(range(w, self.num_batches, num_workers))
        for _ in islice(samples, done * self.batch_size):
            pass
        for b in range(done, total):
            yield self._batch(samples, faults, _seed_of(*tag, "augment", b))

    def _val_batches(self, faults: _Faults) -> Iterator[Batch]:
        j, num_workers = _worker_slot()
        mine = list(range(len(self.info.urls)))[self.rank::self.world_size][j::num_workers]
        samples = (s for url, expected in self._shards(mine) for s in _read_shard(url, expected, faults))
        while True:
            batch = self._batch(samples, faults, seed=0)  # evaluation transforms draw no random numbers
            if batch is None:
                return
            yield batch


# ---------------------------------------------------------------------------------------------------------
# Loaders


def _check_rank(rank: int, world_size: int, batch_size: int, num_workers: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size) with world_size >= 1, got rank={rank}, "
                         f"world_size={world_size}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")


class _Loader:
    """Shared parts: the DataLoader over a ``_Stream`` and the fault counter."""

    def __init__(self, stream: _Stream, num_workers: int, pin_memory: bool):
        self.info = stream.info
        self._stream, self.num_workers, self.pin_memory = stream, num_workers, pin_memory
        self.skipped = 0  # faulty samples / broken-off shards skipped so far, summed over workers and epochs

    def _iterate(self, num_workers: int) -> Iterator[Batch]:
        # Created now (workers start here), so the stream's epoch settings are captured before returning.
        batches = iter(DataLoader(self._stream, batch_size=None, num_workers=num_workers,
                                  pin_memory=self.pin_memory, persistent_workers=False))
        return self._count_skipped(batches)

    def _count_skipped(self, batches: Iterator) -> Iterator[Batch]:
        for item in batches:
            if isinstance(item, DataError):
                raise item
            images, labels, skipped = item
            self.skipped += int(skipped)
            yield images, labels


class TrainLoader(_Loader):
    """Epochs of exactly ``len(self)`` batches ``(images float32 (B, C, S, S), labels int64 (B,))`` per rank.

    Use ``for images, labels in loader.epoch(e, start_batch=k)``; the loader itself is not iterable, so an
    epoch number is never forgotten.
    """

    def __len__(self) -> int:
        return self._stream.num_batches

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """Batches ``start_batch .. len(self) - 1`` of ``epoch`` (the same ones an uninterrupted epoch gives)."""
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch must be in [0, {len(self)}], got {start_batch}")
        if start_batch == len(self):
            return iter(())
        self._stream.epoch, self._stream.start_batch = int(epoch), int(start_batch)
        # Near the end of an epoch fewer processes than logical workers suffice (each has a batch left).
        return self._iterate(min(self.num_workers, len(self) - start_batch))


class ValLoader(_Loader):
    """Each sample of the split exactly once over all ranks, in a fixed order; ranks may differ in batches."""

    def __init__(self, stream: _Stream, num_workers: int, pin_memory: bool, num_samples: int | None,
                 num_batches: int | None):
        super().__init__(stream, num_workers, pin_memory)
        self.num_samples = num_samples  # this rank's samples (None when shard lengths are unknown)
        self._num_batches = num_batches

    def __len__(self) -> int:
        if self._num_batches is None:
            raise TypeError(f"the number of batches of {self.info.urls[0]}... is unknown without shard lengths")
        return self._num_batches

    def __iter__(self) -> Iterator[Batch]:
        return self._iterate(self.num_workers)


def make_train_loader(
    source: str | os.PathLike | DatasetInfo, split: str = "train", *, batch_size: int, rank: int = 0,
    world_size: int = 1, num_workers: int = 2, seed: int = 0, img_size: int, in_chans: int,
    mean: Sequence[float] | None = None, std: Sequence[float] | None = None, aug: AugConfig | Mapping | None = None,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER, strict: bool = False, pin_memory: bool = False,
) -> TrainLoader:
    """Training loader for one rank; ``len(loader) = num_samples // (batch_size * world_size)`` on every rank.

    ``source``: anything ``read_dataset_info`` takes (then ``split`` selects), or its result.
    ``mean``/``std`` default to the data set's (``_info.json``), else ImageNet's. Raises DataError when the
    split has fewer shards than ``world_size * max(1, num_workers)`` or fewer samples than one global batch.
    """
    _check_rank(rank, world_size, batch_size, num_workers)
    if shuffle_buffer < 1:
        raise ValueError(f"shuffle_buffer must be >= 1, got {shuffle_buffer}")
    info = source if isinstance(source, DatasetInfo) else read_dataset_info(source, split)
    readers = world_size * max(1, num_workers)
    if len(info.urls) < readers:
        raise DataError(
            f"split {info.split!r} of {info.name} has {len(info.urls)} shard(s), fewer than world_size * num_workers = "
            f"{world_size} * {max(1, num_workers)}: use num_workers <= {len(info.urls) // world_size} or write "
            f"smaller shards (make_shards.py --shard-size)")
    num_batches = info.num_samples // (batch_size * world_size)
    if num_batches == 0:
        raise DataError(f"split {info.split!r} of {info.name} has {info.num_samples} samples, fewer than one "
                        f"global batch (batch_size * world_size = {batch_size * world_size})")
    transform = ImageTransform(is_training=True, img_size=img_size, in_chans=in_chans, mean=mean or info.mean,
                               std=std or info.std, aug=aug)
    stream = _Stream(info, transform, training=True, batch_size=batch_size, rank=rank, world_size=world_size,
                     seed=seed, num_batches=num_batches, shuffle_buffer=shuffle_buffer, strict=strict,
                     logical_workers=max(1, num_workers))
    return TrainLoader(stream, num_workers, pin_memory)


def make_val_loader(
    source: str | os.PathLike | DatasetInfo, split: str = "validation", *, batch_size: int, rank: int = 0,
    world_size: int = 1, num_workers: int = 2, img_size: int, in_chans: int, mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None, crop_pct: float | None = None, interpolation: str = "bicubic",
    strict: bool = False, pin_memory: bool = False,
) -> ValLoader:
    """Evaluation loader for one rank: rank r reads shards r, r + world_size, ... in order, every sample once.

    ``source``: anything ``read_dataset_info`` takes (then ``split`` selects), or its result.
    ``crop_pct`` None means timm's default (0.875); use 1.0 for images already at ``img_size``. Workers are
    capped at this rank's shard count (a rank without shards yields no batches).
    """
    _check_rank(rank, world_size, batch_size, num_workers)
    info = source if isinstance(source, DatasetInfo) else read_dataset_info(source, split)
    mine = list(range(len(info.urls)))[rank::world_size]
    num_workers = min(num_workers, len(mine))
    num_samples = num_batches = None
    if info.shard_lengths is not None:
        per_worker = [sum(info.shard_lengths[i] for i in mine[j::max(1, num_workers)])
                      for j in range(max(1, num_workers))]
        num_samples = sum(per_worker)
        num_batches = sum(-(-n // batch_size) for n in per_worker)
    transform = ImageTransform(is_training=False, img_size=img_size, in_chans=in_chans, mean=mean or info.mean,
                               std=std or info.std, crop_pct=crop_pct, interpolation=interpolation)
    stream = _Stream(info, transform, training=False, batch_size=batch_size, rank=rank, world_size=world_size,
                     seed=0, num_batches=0, shuffle_buffer=1, strict=strict)
    return ValLoader(stream, num_workers, pin_memory, num_samples, num_batches)
