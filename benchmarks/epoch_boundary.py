"""The stall at an epoch boundary: the time from the last batch of an epoch to the first of the next, with the
loader iterated epoch by epoch (before) against one iteration across epochs (after, what the image phase
does now: ``TrainLoader.epochs``).

Before, the next epoch's iteration started only after the last batch had been used, and every worker then
filled its shuffle buffer from its shards before it made its first batch. Now each worker starts its next
epoch as soon as it has handed in its last batch of the current one, while the other workers' batches are
still being used. Both sides: vitwarm's loader over the same synthetic ImageNet-sized JPEG shards (500 x 375,
about 110 KB), the same workers, buffer and batch; the training step is a stand-in that sleeps ``--step-ms``
(a GPU step costs the host little CPU). Printed: the boundary's wait for a batch and the median wait inside
the epochs, for both, and the ratio after / before of the boundary waits.

    python benchmarks/epoch_boundary.py [--images 480] [--workers 2] [--batch-size 16] [--shuffle-buffer 1000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from itertools import count
from pathlib import Path

from vitwarm.data import make_train_loader, write_folder_shards

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import NAME, write_jpeg_set  # noqa: E402 (benchmarks/data.py, beside this file)


def waits(batches: Iterator, count: int, step_s: float) -> list[float]:
    """Seconds waited for each of ``count`` batches, a stand-in step of ``step_s`` after each."""
    out = []
    for _ in range(count):
        start = time.perf_counter()
        next(batches)
        out.append(time.perf_counter() - start)
        time.sleep(step_s)
    return out


def epoch_by_epoch(loader) -> Iterator:
    """The image phase's batches as the previous release made them: each epoch's iteration started after the
    last batch of the one before."""
    for epoch in count():
        yield from loader.epoch(epoch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=480)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--img-size", type=int, default=64, help="small: the boundary, not the transform, is measured")
    parser.add_argument("--shuffle-buffer", type=int, default=1000)
    parser.add_argument("--step-ms", type=float, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        shards = write_folder_shards(write_jpeg_set(Path(tmp) / "jpeg", args.images, size=(500, 375), noise=25),
                                     Path(tmp) / "shards", name=NAME, shard_size=max(1, args.images // 8))
        loader = make_train_loader(shards, batch_size=args.batch_size, num_workers=args.workers,
                                   img_size=args.img_size, in_chans=3, shuffle_buffer=args.shuffle_buffer)
        per_epoch, step_s = len(loader), args.step_ms / 1e3
        # Epoch 0 of each side starts the workers and is not counted; epochs 1 and 2 and their boundary are.
        measured = {}
        for name, batches in (("before", lambda: epoch_by_epoch(loader)), ("after", lambda: loader.epochs(0))):
            got = waits(batches(), 3 * per_epoch, step_s)[per_epoch:]  # an iteration of the loader ends the one before
            inside = got[1:per_epoch] + got[per_epoch + 1:]
            measured[name] = (got[per_epoch], statistics.median(inside))
    print(f"\n{args.workers} workers, batch {args.batch_size}, shuffle buffer {args.shuffle_buffer}, "
          f"{per_epoch} batches per epoch, stand-in step {args.step_ms:.0f} ms")
    for name, (boundary, inside) in measured.items():
        print(f"{name:<8} wait at the epoch boundary {boundary * 1e3:8.1f} ms   median inside an epoch "
              f"{inside * 1e3:6.1f} ms")
    print(f"ratio after / before (boundary): {measured['after'][0] / measured['before'][0]:.3f}")


if __name__ == "__main__":
    main()
