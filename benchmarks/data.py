"""Training-pipeline throughput: vitwarm's loader against timm's own webdataset reader + ``create_loader``.

Both pipelines read the same shards with the same worker count and do the same work per image: JPEG
decode, RandomResizedCrop to 224 px, flip, RandAugment, normalise, random erasing, batch of float32.
Without random erasing (``--re-prob 0``) vitwarm's workers ship uint8 batches and the benchmark normalises
them in the main process, where the training step would (on its device), so both sides end in the same
float32 batches. The
benchmark prints images/s (and per worker) for each and the ratio vitwarm / timm, measured over batches
after a warm-up (worker start-up excluded).

    python benchmarks/data.py [--shards DIR] [--images 1000] [--workers 2] [--batch-size 32] [--batches 24]
                              [--re-prob 0.25]

Without ``--shards`` it writes a synthetic ImageNet-like JPEG set (300-500 px images, the class tree
written by vitwarm's folder writer) into a temporary directory first.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from vitwarm.config import AugConfig
from vitwarm.data import make_train_loader, write_folder_shards
from vitwarm.data.transforms import fix_posterize

NAME = "bench"


def write_jpeg_set(root: Path, num_images: int, num_classes: int = 10, seed: int = 0,
                   size: tuple[int, int] | None = None, noise: float = 12) -> Path:
    """An ImageFolder tree of smooth random colour images with noise of sd ``noise`` (JPEG q90): 300-500 px a
    side and about 15-40 KB each by default; ``size=(500, 375), noise=25`` gives ImageNet's typical image
    (500 x 375, about 110 KB)."""
    rng = np.random.default_rng(seed)
    for i in tqdm(range(num_images), desc="jpeg images", unit="img"):
        w, h = size or rng.integers(300, 500, size=2)
        coarse = Image.fromarray(rng.integers(0, 256, size=(12, 12, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        img = np.clip(np.asarray(coarse, np.float32) + rng.normal(0, noise, size=(h, w, 3)), 0, 255).astype(np.uint8)
        d = root / "train" / f"c{i % num_classes:02d}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i:06d}.jpg", quality=90)
    return root


def timed(batches: Iterator, warmup: int, measure: int) -> float:
    """Images/s over ``measure`` batches after ``warmup`` batches."""
    n = 0
    for i, (images, _) in enumerate(batches):
        if i == warmup:
            start = time.perf_counter()
        elif i > warmup:
            n += len(images)
        if i == warmup + measure:
            break
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", default=None, help=f"existing shard directory with a 'train' split named {NAME!r}")
    parser.add_argument("--images", type=int, default=1000, help="synthetic images to write (without --shards)")
    parser.add_argument("--workers", type=int, default=2, help="loader worker processes (both pipelines)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=24, help="batches timed after the warm-up batches")
    parser.add_argument("--warmup", type=int, default=4, help="batches read before timing starts")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--auto-augment", default="rand-m9-mstd0.5-inc1", help="timm RandAugment string")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each pipeline (best kept)")
    parser.add_argument("--re-prob", type=float, default=0.25,
                        help="random-erasing probability (0: vitwarm's workers ship uint8 batches)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        shards = Path(args.shards) if args.shards else write_folder_shards(
            write_jpeg_set(Path(tmp) / "jpeg", args.images), Path(tmp) / "shards", name=NAME,
            shard_size=max(1, args.images // 10))
        # DeiT's training transform (random erasing 0.25 by default), as the dict of options the loader takes.
        aug = asdict(AugConfig(auto_augment=args.auto_augment, re_prob=args.re_prob, color_jitter=0.4))
        needed = args.warmup + args.batches + 1

        def vitwarm_batches():
            loader = make_train_loader(shards, batch_size=args.batch_size, num_workers=args.workers,
                                       img_size=args.img_size, in_chans=3, aug=aug)
            if len(loader) < needed:
                raise SystemExit(f"need {needed} batches per epoch, the shards give {len(loader)}: use more --images")
            # Normalised here, as the training step does on its device: the same float32 batches as timm's.
            return ((loader.on_device(images), labels) for images, labels in loader.epoch(0))

        def timm_batches():
            from timm.data import create_dataset, create_loader

            ds = create_dataset(f"wds/{NAME}", root=str(shards), split="train", is_training=True,
                                batch_size=args.batch_size)
            loader = create_loader(
                ds, input_size=(3, args.img_size, args.img_size), batch_size=args.batch_size, is_training=True,
                auto_augment=aug["auto_augment"], re_prob=aug["re_prob"], re_mode=aug["re_mode"], scale=aug["scale"],
                ratio=aug["ratio"], hflip=aug["hflip"], color_jitter=aug["color_jitter"],
                interpolation=aug["interpolation"],
                num_workers=args.workers, use_prefetcher=False, persistent_workers=False)
            fix_posterize(ds.transform)  # same fix as vitwarm's, else timm crashes on "keep 0 bits"
            return iter(loader)

        best = {"vitwarm": 0.0, "timm": 0.0}
        for _ in range(args.repeats):
            for name, make in (("vitwarm", vitwarm_batches), ("timm", timm_batches)):
                best[name] = max(best[name], timed(make(), args.warmup, args.batches))

    per = max(1, args.workers)
    print(f"\n{args.img_size} px, batch {args.batch_size}, {args.workers} worker(s), {args.auto_augment}, "
          f"best of {args.repeats}")
    print(f"{'pipeline':<10}{'images/s':>10}{'per worker':>12}")
    for name, rate in best.items():
        print(f"{name:<10}{rate:>10.1f}{rate / per:>12.1f}")
    print(f"ratio vitwarm / timm: {best['vitwarm'] / best['timm']:.2f}")


if __name__ == "__main__":
    main()
