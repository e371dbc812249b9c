"""Training and validation loaders over webdataset shards (timm's layout), deterministic and resumable.

``make_train_loader`` / ``make_val_loader`` check their arguments against the split, build its transform
and return a loader: ``TrainLoader.epoch(e, start_batch=k)`` gives exactly the batches an uninterrupted
epoch ``e`` gives from batch k on (the order is described in vitwarm.data.streams); a ``ValLoader`` gives
each sample of the split once over all ranks. Faulty samples skipped in the workers add up in
``loader.skipped``.
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.util  # its exit handler registered before ours below, which therefore runs first
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from itertools import chain, count

import torch
from torch.utils.data import DataLoader, IterableDataset

from .http_fetch import DEFAULT_HTTP, HttpLimits
from .shuffle import DEFAULT_SHUFFLE_BUFFER
from .sources import DataError, DatasetInfo, read_dataset_info
from .streams import HANDED_OVER, Batch, TrainStream, ValStream
from .transforms import ImageTransform, aug_options


def _check_rank(rank: int, world_size: int, batch_size: int, num_workers: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size) with world_size >= 1, got rank={rank}, "
                         f"world_size={world_size}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")


class _EpochSource(IterableDataset):
    """The dataset of a training DataLoader whose workers persist across epochs: at each iteration, in each
    worker, the ``TrainStream`` of the epoch and start batch that ``TrainLoader.epoch`` wrote last, or
    (``TrainLoader.epochs``) those of every epoch from there on.

    Persistent workers keep the dataset object they were started with, so the position travels through
    shared memory: a 3-element int64 tensor (epoch, start batch, across epochs), written by the training
    process before it starts an iteration of the DataLoader and read by each worker when torch calls
    ``iter()`` on the dataset at that iteration's start (and only then: a running epoch never sees the next
    one's position).

    Across epochs, DataLoader worker j hands out the j-th of every W batches counted from the iteration's
    start (torch's round robin, which no worker breaks, since none runs out), so in epoch e it plays the
    logical worker that makes those batches of e: the epochs' batches are the very ones ``epoch`` gives. A
    worker starts its next epoch (its shards, its shuffle buffer) as soon as it has handed in its last batch
    of the current one, while the other workers' batches are still being used: no stall at the boundary.
    """

    def __init__(self, make_stream: Callable[..., TrainStream], num_batches: int):
        super().__init__()
        self.make_stream, self.num_batches = make_stream, num_batches
        self.position = torch.zeros(3, dtype=torch.int64).share_memory_()

    def __iter__(self) -> Iterator:
        epoch, start_batch, across = self.position.tolist()
        if not across:
            return iter(self.make_stream(epoch=epoch, start_batch=start_batch))
        # Batch b of epoch e is batch (e - epoch) * L + b - start_batch of the iteration.
        return chain.from_iterable(
            self.make_stream(epoch=e, start_batch=start_batch if e == epoch else 0,
                             rotation=start_batch - (e - epoch) * self.num_batches) for e in count(epoch))


def worker_init(worker_id: int) -> None:
    """``worker_init_fn`` of every DataLoader of a run: its workers leave the training process's group and
    ignore SIGTERM.

    A launcher stops a worker by signalling its process group (torch's elastic launcher sends SIGTERM to
    each worker's group; a terminal sends Ctrl-C to its foreground group), and a scheduler (SLURM at
    preemption or the time limit) sends SIGTERM to every process of the job, loader workers included;
    torch's loader workers would die of it under the training process that handles it as its polite stop
    (vitwarm.run.preemption). Out of the group and deaf to SIGTERM, they are stopped by the training process
    only (directly, with its loaders; SIGKILL still ends them), and each exits when its parent dies.
    """
    os.setpgid(0, 0)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _quiet_fd_sharer()  # the trainer may go (stopped, killed) while this worker hands it a batch's memory


def _quiet_fd_sharer() -> None:
    """Leave unprinted the traceback of this process's file-descriptor sharer (multiprocessing's resource
    sharer, a thread, which reports its errors through ``sys.excepthook`` itself) when its peer went away
    mid-transfer: a trainer or loader worker that ended on purpose leaves the other side a reset connection
    (a worker killed by a SIGTERM to every process before it could ignore it, as it starts, does that to the
    trainer's), and that traceback would be the last thing a stopped run prints. Every other exception is
    reported as before. Installed once per process."""
    report = sys.excepthook
    if getattr(report, "quiets_fd_sharer", False):
        return

    def quiet_sharer(exc_type, exc, traceback) -> None:
        gone = issubclass(exc_type, (ConnectionError, EOFError)) and "_serve" in threading.current_thread().name
        if not gone:
            report(exc_type, exc, traceback)

    quiet_sharer.quiets_fd_sharer = True
    sys.excepthook = quiet_sharer


@atexit.register  # after multiprocessing's exit handler (imported above), so it runs before that one
def _end_workers_at_exit() -> None:
    """At the process's exit, SIGKILL its daemonic children (loader workers) still running: multiprocessing's exit
    handler ends them with SIGTERM and then waits for them, which would wait forever for loader workers, which
    ignore it (torch shuts its persistent workers down itself only when it pins memory). SIGKILL is what
    SIGTERM was to them; a process cannot tell its loader workers apart once started. A worker killed while
    it fetches a tensor's file descriptor from this process leaves this process's sharer thread a reset
    connection, which is not printed (``_quiet_fd_sharer``, installed by every loader and worker)."""
    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()
            child.join()


class _Loader:
    """Shared parts: one DataLoader (its workers kept across iterations), the fault counter, ``on_device``."""

    def __init__(self, dataset: IterableDataset, info: DatasetInfo, transform: ImageTransform, num_workers: int,
                 pin_memory: bool):
        self.info, self.num_workers, self.pin_memory = info, num_workers, pin_memory
        self.on_device = transform.on_device  # uint8 (B, C, H, W) on the device -> float32 normalised (erased)
        _quiet_fd_sharer()
        self.skipped = 0  # faulty samples / broken-off shards skipped so far, summed over workers and epochs
        self._loader = DataLoader(dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                                  persistent_workers=num_workers > 0, worker_init_fn=worker_init)

    def _iterate(self) -> Iterator[Batch]:
        # The iteration starts now, not at the first next(): the workers read the position written before.
        return self._count_skipped(iter(self._loader))

    def _count_skipped(self, batches: Iterator) -> Iterator[Batch]:
        for item in batches:
            if isinstance(item, HANDED_OVER):
                raise item
            images, labels, skipped = item
            self.skipped += int(skipped)
            yield images, labels


class TrainLoader(_Loader):
    """Epochs of exactly ``len(self)`` batches ``(images uint8 (B, C, S, S), labels int64 (B,))`` per rank;
    ``on_device`` normalises (and erases) them on the training device.

    Use ``for images, labels in loader.epoch(e, start_batch=k)``, one epoch at a time (the workers persist,
    and starting the next epoch ends the previous one); the loader itself is not iterable, so an epoch
    number is never forgotten.
    """

    def __init__(self, info: DatasetInfo, transform: ImageTransform, make_stream: Callable[..., TrainStream],
                 num_batches: int, num_workers: int, pin_memory: bool):
        self._source = _EpochSource(make_stream, num_batches)
        super().__init__(self._source, info, transform, num_workers, pin_memory)
        self._num_batches = num_batches

    def __len__(self) -> int:
        return self._num_batches

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """Batches ``start_batch .. len(self) - 1`` of ``epoch`` (the same ones an uninterrupted epoch gives)."""
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch must be in [0, {len(self)}], got {start_batch}")
        if start_batch == len(self):
            return iter(())
        self._source.position.copy_(torch.tensor([epoch, start_batch, 0]))
        # Near the end of an epoch, workers without a batch left yield none; the others keep their turns.
        return self._iterate()

    def epochs(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """Endless: the batches of ``epoch(epoch, start_batch)``, then of every following epoch, with no stall
        between epochs (see ``_EpochSource``); each is what ``epoch`` gives. Ends any iteration before it."""
        if not 0 <= start_batch < len(self):
            raise ValueError(f"start_batch must be in [0, {len(self)}), got {start_batch}")
        self._source.position.copy_(torch.tensor([epoch, start_batch, 1]))
        return self._iterate()


class ValLoader(_Loader):
    """Each sample of the split exactly once over all ranks, in a fixed order; ranks may differ in batches."""

    def __init__(self, stream: ValStream, num_workers: int, pin_memory: bool, num_samples: int | None,
                 num_batches: int | None):
        super().__init__(stream, stream.info, stream.transform, num_workers, pin_memory)
        self.num_samples = num_samples  # this rank's samples (None when shard lengths are unknown)
        self._num_batches = num_batches

    def __len__(self) -> int:
        if self._num_batches is None:
            raise TypeError(f"the number of batches of {self.info.urls[0]}... is unknown without shard lengths")
        return self._num_batches

    def __iter__(self) -> Iterator[Batch]:
        return self._iterate()


def make_train_loader(
    source: str | os.PathLike | DatasetInfo, split: str = "train", *, batch_size: int, rank: int = 0,
    world_size: int = 1, num_workers: int = 2, seed: int = 0, img_size: int, in_chans: int,
    mean: Sequence[float] | None = None, std: Sequence[float] | None = None, aug: Mapping | None = None,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER, strict: bool = False, pin_memory: bool = False,
    http: HttpLimits = DEFAULT_HTTP,
) -> TrainLoader:
    """Training loader for one rank; ``len(loader) = num_samples // (batch_size * world_size)`` on every rank.

    ``source``: anything ``read_dataset_info`` takes (then ``split`` selects), or its result.
    ``mean``/``std`` default to the data set's (``_info.json``), else ImageNet's. ``aug``: augmentation options
    by name (``vitwarm.data.transforms.AUG_OPTIONS``; the config's ``data.aug`` as a dict). Raises DataError when the
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
                               std=std or info.std, **aug_options(aug))
    make_stream = partial(TrainStream, info=info, transform=transform, batch_size=batch_size, rank=rank,
                          world_size=world_size, strict=strict, seed=seed, num_batches=num_batches,
                          shuffle_buffer=shuffle_buffer, logical_workers=max(1, num_workers), http=http)
    return TrainLoader(info, transform, make_stream, num_batches, num_workers, pin_memory)


def make_val_loader(
    source: str | os.PathLike | DatasetInfo, split: str = "validation", *, batch_size: int, rank: int = 0,
    world_size: int = 1, num_workers: int = 2, img_size: int, in_chans: int, mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None, crop_pct: float | None = None, interpolation: str = "bicubic",
    strict: bool = False, pin_memory: bool = False, http: HttpLimits = DEFAULT_HTTP,
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
    stream = ValStream(info, transform, batch_size=batch_size, rank=rank, world_size=world_size, strict=strict,
                       http=http)
    return ValLoader(stream, num_workers, pin_memory, num_samples, num_batches)
