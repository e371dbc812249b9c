"""Image-phase training throughput: vitwarm's loop against a minimal hand-written timm + torch loop.

Both train the same timm model on the same batches with the same AdamW settings in one process. The
batches are decoded once from real Fashion-MNIST shards and kept in memory, so the comparison isolates the
training loop (Accelerate wrapping, per-step re-seeding, NaN guard, scheduler, logging) from data loading,
which benchmarks/data.py measures. Rounds alternate between the two loops so that drifting machine load
hits both alike; the ratio is the median over rounds.

    python benchmarks/train_loop.py --model vitwarm_pico_patch4_32 --batch 64 --steps 30 --rounds 3
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from accelerate import Accelerator

from vitwarm.config import load_config
from vitwarm.data import ensure_fmnist_shards, read_splits
from vitwarm.run.checkpoints import RunState
from vitwarm.run.images import ImageData
from vitwarm.run.phases import KINDS
from vitwarm.run.phases.common import create_vit
from vitwarm.run.plan import plan_phases, vit_flops_per_sample
from vitwarm.run.precision import accelerate_precision

from e2e import loop_only  # the sibling benchmark (run as python benchmarks/train_loop.py)


def vitwarm_loop(cfg, accelerator, images, batches, steps: int) -> float:
    """Images/s of vitwarm's own loop (train_phase) over ``steps`` optimizer steps."""
    phase = plan_phases(cfg, train_samples=images.train_samples, world_size=1, flops_per_sample=0.0)[-1]
    training = KINDS["image"].setup(cfg, phase, accelerator, images, start_step=0)
    training.batches = itertools.cycle(batches)
    state = RunState(phase="image", model_name=cfg.model.name)
    start = time.perf_counter()
    loop_only(cfg, replace(phase, steps=steps), training, state, accelerator, images)
    synchronize(accelerator.device)
    return steps * phase.global_batch / (time.perf_counter() - start)


def plain_loop(cfg, num_classes: int, batches, steps: int, device: torch.device) -> float:
    """Images/s of the textbook loop: forward (autocast under bf16), cross-entropy, backward, AdamW step."""
    model = create_vit(cfg, "image-init", num_classes=num_classes).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    data = itertools.cycle(batches)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        images, labels = (t.to(device, non_blocking=True) for t in next(data))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    return steps * len(labels) / (time.perf_counter() - start)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":  # GPU work is asynchronous: wait for it before reading the clock
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vitwarm_pico_patch4_32", help="timm model name")
    parser.add_argument("--batch", type=int, default=64, help="images per step")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per round and loop")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="mixed precision (bf16 on GPUs)")
    parser.add_argument("--img-size", type=int, default=None, help="override the model's image size")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's peak dense TFLOP/s at this precision, to print model FLOP utilisation")
    parser.add_argument("--shards", default=None, help="Fashion-MNIST shard root (built in a temp dir if absent)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        shards = args.shards or ensure_fmnist_shards(Path(tmp) / "shards", fraction=0.05, progress=False)
        size = [f"model.kwargs.img_size={args.img_size}"] if args.img_size else []
        cfg = load_config(None, size + [f"model.name={args.model}", "model.in_chans=1", f"data.source={shards}",
                                 f"precision={args.precision}",
                                 "warmup.fraction=0", f"train.batch_size={args.batch}",
                                 "log.every_steps=1000000", "checkpoint.every_steps=1000000", f"run.dir={tmp}/run"])
        Path(cfg.run.dir).mkdir()
        accelerator = Accelerator(mixed_precision=accelerate_precision(args.precision))
        splits = read_splits(cfg.data)
        with torch.device("meta"):
            probe = create_vit(cfg, "probe")
        images = ImageData.open(cfg, splits, img_size=probe.patch_embed.img_size[0], micro_batch=args.batch,
                                rank=accelerator.process_index, world_size=accelerator.num_processes,
                                device=accelerator.device)
        # Decoded and normalised once, reused by both loops.
        batches = [(images.train[0].on_device(x), y) for x, y in itertools.islice(images.train[0].epoch(0), 8)]
        flops = 3 * vit_flops_per_sample(probe, probe.patch_embed.num_patches)

        device = accelerator.device
        plain_loop(cfg, images.num_classes, batches, 3, device)  # warm-up of allocator and kernels, not timed
        rows = []
        for _ in range(args.rounds):
            plain = plain_loop(cfg, images.num_classes, batches, args.steps, device)
            ours = vitwarm_loop(cfg, accelerator, images, batches, args.steps)
            rows.append((plain, ours, ours / plain))
            print(f"round: plain {plain:8.1f} img/s   vitwarm {ours:8.1f} img/s   ratio {ours / plain:.3f}")
    ratio = statistics.median(r[2] for r in rows)
    print(f"\n{args.model} on {device}, batch {args.batch}, precision {args.precision}, {args.threads} threads, "
          f"{args.steps} steps x {args.rounds} rounds")
    print(f"plain timm+torch loop: {statistics.median(r[0] for r in rows):8.1f} img/s")
    print(f"vitwarm train_phase:   {statistics.median(r[1] for r in rows):8.1f} img/s "
          f"({statistics.median(r[1] for r in rows) * flops / 1e9:.1f} GFLOP/s)")
    print(f"ratio vitwarm / plain: {ratio:.3f} (median over rounds)")
    if args.peak_tflops:
        mfu = statistics.median(r[1] for r in rows) * flops / (args.peak_tflops * 1e12)
        print(f"model FLOP utilisation of vitwarm's loop: {100 * mfu:.1f}% of {args.peak_tflops:g} TFLOP/s")


if __name__ == "__main__":
    main()
