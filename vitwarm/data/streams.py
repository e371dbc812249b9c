"""One rank's batches of one training epoch (``TrainStream``) or of one pass over a validation split
(``ValStream``), as iterable datasets for torch's DataLoader.

Training order (see docs/data.md for the full argument). With ``W = max(1, num_workers)`` logical workers
per rank and ``L`` batches per epoch and rank:

* the split's shards are permuted with a seed made of (seed, epoch); rank r takes every ``world_size``-th
  shard starting at r, and logical worker w of that rank every W-th of those starting at w;
* a worker reads its shards in that order through a sample shuffle buffer seeded by (seed, epoch, rank, w);
  when its shards run out it continues with another pass over them in a new order (seeded by the pass
  number), so it can always fill its quota;
* batch i of the rank's epoch is the (i // W)-th batch of logical worker i % W. Batches are assembled inside
  the workers and torch's DataLoader hands them out round-robin, so this holds for any timing;
* each batch's augmentation runs under random / numpy / torch seeds made of (seed, epoch, rank, w, batch).

Every seed comes from ``vitwarm.seeds.derive_seed`` (purposes ``shards``, ``buffer``, ``pass``, ``augment``).

Resuming at batch k: DataLoader worker j plays logical worker (j + k) % W, so the first batch handed out is
batch k (``rotation``: in epochs after the first of an iteration that runs across epochs, the offset that
keeps DataLoader worker j on the j-th of every W batches counted from the iteration's start, see
vitwarm.data.loaders); each logical worker skips the samples of the batches it made before k, decoding them (a faulty
sample took no place in a batch, so only decoding tells where those batches ended) but not augmenting them.

Faults (see vitwarm.data.reader) are counted per worker and travel with each batch as a third item; a
DataError that stops a worker is handed over as the last item (the loader re-raises it).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from itertools import count, islice

import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..seeds import derive_seed, seeded
from .http_fetch import DEFAULT_HTTP, HttpLimits, TransferStalled
from .reader import Faults, SampleError, decode, read_shard
from .shuffle import buffer_shuffle
from .sources import DataError, DatasetInfo
from .synthetic import is_synthetic, synthetic_shard
from .transforms import ImageTransform

# What a stream hands over to the training process as an item instead of raising it in a DataLoader worker
# (torch would re-raise it wrapped in its own text and the worker's traceback).
HANDED_OVER = (DataError, TransferStalled)

Batch = tuple[torch.Tensor, torch.Tensor]


def _worker_slot() -> tuple[int, int]:
    """(DataLoader worker id, number of workers); (0, 1) in the main process."""
    wi = get_worker_info()
    return (0, 1) if wi is None else (wi.id, wi.num_workers)


class _ShardStream(IterableDataset):
    """What both streams share: reading shards, assembling batches, handing faults over."""

    def __init__(self, info: DatasetInfo, transform: ImageTransform, *, batch_size: int, rank: int,
                 world_size: int, strict: bool, http: HttpLimits = DEFAULT_HTTP):
        super().__init__()
        self.info, self.transform, self.batch_size = info, transform, batch_size
        self.rank, self.world_size, self.strict, self.http = rank, world_size, strict, http

    def _samples(self, order: Sequence[int], faults: Faults) -> Iterator[dict]:
        """The raw samples of the shards ``order`` (indices into info.urls), read one after the other."""
        lengths = self.info.shard_lengths or [None] * len(self.info.urls)
        for i in order:
            url = self.info.urls[i]
            yield from synthetic_shard(url) if is_synthetic(url) else read_shard(url, lengths[i], faults, self.http)

    def _batch(self, samples: Iterator[dict], faults: Faults, seed: int) -> Batch | None:
        """Decode and transform up to batch_size samples (fewer only when ``samples`` runs out)."""
        images, labels = [], []
        with seeded(seed):
            for s in samples:
                decoded = decode(s, self.info.num_classes, faults)
                if decoded is not None:
                    images.append(self.transform(decoded[0]))
                    labels.append(decoded[1])
                    if len(images) == self.batch_size:
                        break
        if not images:
            return None
        return torch.stack(images), torch.tensor(labels, dtype=torch.int64)

    def _batches(self, faults: Faults) -> Iterator[Batch]:
        raise NotImplementedError

    def __iter__(self) -> Iterator:
        """``(images, labels, skipped)`` per batch, and last the DataError that stopped it, if one did."""
        faults = Faults(self.strict)
        try:
            for images, labels in self._batches(faults):
                yield images, labels, faults.take()
        except HANDED_OVER as err:
            # Raised in a DataLoader worker, torch would re-raise it wrapped in its own text and the worker's
            # traceback; handed over as an item, it is re-raised as itself by the loader.
            yield err


class TrainStream(_ShardStream):
    """Batches ``start_batch .. num_batches - 1`` of one rank's training ``epoch`` (see module docstring)."""

    def __init__(self, info: DatasetInfo, transform: ImageTransform, *, batch_size: int, rank: int,
                 world_size: int, strict: bool, seed: int, num_batches: int, shuffle_buffer: int,
                 logical_workers: int, epoch: int, start_batch: int, rotation: int | None = None,
                 http: HttpLimits = DEFAULT_HTTP):
        super().__init__(info, transform, batch_size=batch_size, rank=rank, world_size=world_size, strict=strict,
                         http=http)
        self.seed, self.num_batches, self.shuffle_buffer = seed, num_batches, shuffle_buffer
        self.logical_workers, self.epoch, self.start_batch = logical_workers, epoch, start_batch
        self.rotation = start_batch if rotation is None else rotation

    def _batches(self, faults: Faults) -> Iterator[Batch]:
        # Logical worker w, rotated so that batch start_batch comes first. There are always max(1,
        # num_workers) logical workers, one per DataLoader worker.
        epoch, start_batch, num_workers = self.epoch, self.start_batch, self.logical_workers
        w = (_worker_slot()[0] + self.rotation) % num_workers
        order = list(range(len(self.info.urls)))
        random.Random(derive_seed(self.seed, "shards", epoch)).shuffle(order)
        mine = order[self.rank::self.world_size][w::num_workers]
        worker = (epoch, self.rank, w)  # the seeds' indices of this worker's draws (vitwarm.seeds)

        def passes() -> Iterator[dict]:
            # Each pass goes through the shuffle buffer on its own (the buffer drains at the pass's end), so
            # a worker whose shards hold exactly its quota emits each of its samples exactly once.
            rng = random.Random(derive_seed(self.seed, "buffer", *worker))
            for p in count():
                shards = list(mine)
                if p:
                    random.Random(derive_seed(self.seed, "pass", *worker, p)).shuffle(shards)
                n = 0
                for s in buffer_shuffle(self._samples(shards, faults), self.shuffle_buffer, rng):
                    n += 1
                    yield s
                if n == 0:
                    urls = [self.info.urls[i] for i in mine]
                    raise SampleError(f"none of the {len(urls)} shard(s) read by rank {self.rank} worker {w} gave a "
                                      f"sample, e.g. {urls[0]}: the shards look broken (make_shards.py verify "
                                      f"checks them)")

        samples = passes()
        # The worker makes this rank's batches w, w + W, w + 2W, ... below num_batches; the ones before
        # start_batch were made by the interrupted run: skip the samples they took. Each is decoded (not
        # transformed) because a faulty sample took no place in a batch; their faults were counted then.
        done = len(range(w, start_batch, num_workers))
        total = len(range(w, self.num_batches, num_workers))
        counted_before = Faults(strict=False, problems=[])
        good = (s for s in samples if decode(s, self.info.num_classes, counted_before) is not None)
        for _ in islice(good, done * self.batch_size):
            pass
        for b in range(done, total):
            yield self._batch(samples, faults, derive_seed(self.seed, "augment", *worker, b))


class ValStream(_ShardStream):
    """One rank's part of a validation split: worker j of rank r reads the rank's shards j, j + W, ... in order."""

    def _batches(self, faults: Faults) -> Iterator[Batch]:
        j, num_workers = _worker_slot()
        samples = self._samples(list(range(len(self.info.urls)))[self.rank::self.world_size][j::num_workers], faults)
        while True:
            batch = self._batch(samples, faults, seed=0)  # evaluation transforms draw no random numbers
            if batch is None:
                return
            yield batch
