"""Batches with random erasing: the float ending in the workers (before) against uint8 batches erased on the
device (after), on ImageNet-sized JPEGs.

Before, a training transform with ``re_prob > 0`` kept timm's float ending: the worker normalised, erased and
shipped float32. After, every training batch leaves the worker as uint8 and ``loader.on_device`` normalises
and erases it where the model is. Both sides are vitwarm's loader with one worker over the same shards and
the DeiT augmentation (RandAugment m9-mstd0.5-inc1, random erasing 0.25); "before" swaps the worker's
transform for the float ending the previous release built. Printed: bytes per batch (what goes through
shared memory, pinning and the host-to-device copy), images/s per worker (batches received by the training
process, after warm-up batches), the time per batch of ``on_device`` in the training process after (on a
CPU here; on a GPU it runs on the device), and the after / before ratios. Rounds alternate the sides; the
best round is kept.

    python benchmarks/uint8_batches.py [--images 384] [--batch-size 64] [--batches 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from timm.data import create_transform

from vitwarm.config import AugConfig
from vitwarm.data import make_train_loader, write_folder_shards
from vitwarm.data.transforms import fix_posterize

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import NAME, write_jpeg_set  # noqa: E402 (benchmarks/data.py, beside this file)


def float_ending(loader, aug: dict, img_size: int) -> None:
    """Give ``loader``'s workers the transform of the previous release for ``re_prob > 0``: timm's float ending
    (ToTensor, Normalize, RandomErasing in the worker)."""
    transform = loader._source.make_stream.keywords["transform"]  # the workers' ImageTransform
    transform.tfm = create_transform((3, img_size, img_size), is_training=True, use_prefetcher=False,
                                     mean=transform.on_device.mean, std=transform.on_device.std, **aug)
    fix_posterize(transform.tfm)


def measure(shards: Path, aug: dict, args, before: bool) -> dict:
    """Bytes per batch, images/s the worker delivers, and the training process's ms per batch (after only:
    ``on_device`` over the received batches, timed apart from the delivery)."""
    loader = make_train_loader(shards, batch_size=args.batch_size, num_workers=1, img_size=args.img_size,
                               in_chans=3, aug=aug)
    if before:
        float_ending(loader, aug, args.img_size)
    received = []
    for i, (images, _) in enumerate(loader.epoch(0)):
        if i == args.warmup:
            start = time.perf_counter()
        if i >= args.warmup:
            received.append(images)
        if len(received) == args.batches:
            break
    wall = time.perf_counter() - start
    start = time.perf_counter()
    for images in received if not before else ():
        loader.on_device(images)
    device_ms = 1e3 * (time.perf_counter() - start) / len(received)
    return {"bytes": images.numel() * images.element_size(), "dtype": str(images.dtype).removeprefix("torch."),
            "per_worker": len(received) * args.batch_size / wall, "device_ms": device_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=384, help="synthetic 500 x 375 JPEGs (about 110 KB) to write")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=4, help="batches timed after the warm-up batch")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of each side (best kept)")
    args = parser.parse_args()
    aug = asdict(AugConfig(auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.25))
    with tempfile.TemporaryDirectory() as tmp:
        shards = write_folder_shards(write_jpeg_set(Path(tmp) / "jpeg", args.images, size=(500, 375), noise=25),
                                     Path(tmp) / "shards", name=NAME, shard_size=max(1, args.images // 4))
        best: dict[str, dict] = {}
        for r in range(args.rounds):
            for side in (("before", "after") if r % 2 == 0 else ("after", "before")):
                got = measure(shards, aug, args, before=side == "before")
                if side not in best or got["per_worker"] > best[side]["per_worker"]:
                    best[side] = got
    b, a = best["before"], best["after"]
    print(f"\n{args.img_size} px, batch {args.batch_size}, one worker, RandAugment m9-mstd0.5-inc1, random erasing "
          f"0.25, best of {args.rounds}")
    print(f"{'':<8}{'dtype':>8}{'MB/batch':>10}{'img/s per worker':>18}{'on_device ms/batch':>20}")
    for name, m in best.items():
        print(f"{name:<8}{m['dtype']:>8}{m['bytes'] / 1e6:>10.2f}{m['per_worker']:>18.1f}{m['device_ms']:>20.1f}")
    print(f"ratio after / before: bytes {a['bytes'] / b['bytes']:.2f}, images/s per worker "
          f"{a['per_worker'] / b['per_worker']:.2f}")


if __name__ == "__main__":
    main()
