"""Cost of a warm-up step against an image step of the same ViT at the same token count.

A warm-up step is forward + backward + AdamW through `WarmupViT` on a batch of masked k-Dyck sequences;
an image step is the same for the plain ViT on a batch of images with a classification loss. Both use the
same model architecture, batch size and number of tokens (the ViT's grid), in one process, with the two
kinds of step interleaved so that a slow phase of the machine hits both alike. Batches are made before
timing: this measures the model, not the data. The target is a ratio (warm-up / image time per step) of
at most 1.

    python benchmarks/token_path.py
    python benchmarks/token_path.py --models vitwarm_pico_patch4_32:32 --steps 20 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch
import torch.nn.functional as F

import vitwarm  # noqa: F401  (registers vitwarm_* timm models)
from vitwarm.models import WarmupViT, masked_token_loss
from vitwarm.procedural import ProceduralTask


def image_step(model, opt, images, labels) -> None:
    loss = F.cross_entropy(model(images), labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def warmup_step(warm, opt, tokens, targets, loss_mask) -> None:
    loss, _, _ = masked_token_loss(warm(tokens), targets, loss_mask)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def timed(step, args, device) -> float:
    start = time.perf_counter()
    step(*args)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def compare(name: str, batch_size: int, steps: int, k: int, device: torch.device) -> None:
    torch.manual_seed(0)
    image_model = timm.create_model(name, num_classes=10).to(device)
    warm = WarmupViT(timm.create_model(name).to(device), vocab_size=2 * k + 1)
    n_tokens = warm.num_tokens
    task = ProceduralTask("k_dyck", seq_len=n_tokens, params={"k": k}, mask_ratio=0.5)
    assert task.vocab_size == warm.vocab_size

    C, H, W = image_model.pretrained_cfg["input_size"]
    images = torch.randn(batch_size, C, H, W, device=device)
    labels = torch.randint(0, 10, (batch_size,), device=device)
    batch = {key: torch.from_numpy(v).to(device) for key, v in task.batch(0, batch_size, seed=0).items()}
    image_opt = torch.optim.AdamW(image_model.parameters(), lr=1e-4)
    warm_opt = torch.optim.AdamW([p for p in warm.parameters() if p.requires_grad], lr=1e-4)
    image_args = (image_model, image_opt, images, labels)
    warm_args = (warm, warm_opt, batch["tokens"], batch["targets"], batch["loss_mask"])

    for _ in range(2):  # untimed: allocator and optimizer state
        image_step(*image_args)
        warmup_step(*warm_args)
    image_times, warm_times = [], []
    for _ in range(steps):
        image_times.append(timed(image_step, image_args, device))
        warm_times.append(timed(warmup_step, warm_args, device))
    image_s, warm_s = statistics.median(image_times), statistics.median(warm_times)
    print(f"{name:28s} {n_tokens:6d} {batch_size:5d} {1 / image_s:13.2f} {1 / warm_s:14.2f} "
          f"{warm_s / image_s:13.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+",
                        default=["vitwarm_pico_patch4_32:32", "vitwarm_tiny_patch16_224:4"],
                        help="timm model names with their batch size, NAME:BATCH")
    parser.add_argument("--steps", type=int, default=10, help="timed steps of each kind (the median counts)")
    parser.add_argument("--k", type=int, default=32, help="bracket types of the k-Dyck warm-up task")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, timm {timm.__version__}, {args.threads} thread(s), device {device}")
    print(f"{'model':28s} {'tokens':>6s} {'batch':>5s} {'image step/s':>13s} {'warm-up step/s':>14s} "
          f"{'warm/image':>13s}")
    for spec in args.models:
        name, batch_size = spec.split(":")
        compare(name, int(batch_size), args.steps, args.k, device)


if __name__ == "__main__":
    main()
