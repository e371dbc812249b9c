"""What sharding buys: peak resident memory per process and step time of one ViT under DDP and under FSDP
(run.parallel=fsdp), each with 2 CPU processes over gloo, printed as FSDP / DDP ratios.

    python benchmarks/fsdp_memory.py --model vit_base_patch16_224 --batch 2 --steps 4

Each mode is one ``accelerate launch`` of this file (recipes/accelerate/cpu_ddp.yaml: 2 processes) that builds
the model, shards or wraps it the way a run does (vitwarm.run.fsdp.shard, then
vitwarm.run.phases.common.prepare: Accelerate's DDP, or nothing more under FSDP), and trains ``--steps``
steps of fused AdamW on random images after one untimed step. A process's peak resident memory is its
high-water mark (getrusage), which only grows, so the two modes run in processes of their own, one after
the other; both include the interpreter and torch (about 0.4 GB), which no sharding removes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def worker(args: argparse.Namespace) -> None:
    """One mode in each of the launched processes; the main process prints one JSON line."""
    import timm
    from accelerate import Accelerator
    from omegaconf import OmegaConf
    from timm.optim import create_optimizer_v2

    from vitwarm.run.fsdp import shard
    from vitwarm.run.phases.common import prepare

    accelerator = Accelerator(cpu=True)
    cfg = OmegaConf.create({"run": {"parallel": args.worker, "grad_checkpointing": args.grad_checkpointing},
                            "precision": "fp32", "train": {"compile": False}})
    torch.manual_seed(0)
    model = shard(cfg, accelerator, timm.create_model(args.model, num_classes=1000))
    optimizer = create_optimizer_v2(model, opt="adamw", lr=1e-4, weight_decay=0.05, fused=True)
    model, optimizer, _ = prepare(cfg, accelerator, model, optimizer)
    size = accelerator.unwrap_model(model).patch_embed.img_size  # (H, W)
    images, labels = torch.randn(args.batch, 3, *size), torch.randint(0, 1000, (args.batch,))
    times = []
    for _ in range(args.steps + 1):
        started = time.perf_counter()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    rows = accelerator.gather(torch.tensor([[peak, statistics.median(times[1:])]], dtype=torch.float64)).tolist()
    if accelerator.is_main_process:
        params = sum(p.numel() for p in timm.create_model(args.model, pretrained=False).parameters())
        print(json.dumps({"mode": args.worker, "params": params, "peak_bytes": [r[0] for r in rows],
                          "step_s": [r[1] for r in rows]}))


def launch(mode: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / "recipes/accelerate/cpu_ddp.yaml"), __file__, "--worker", mode, "--model", args.model,
               "--batch", str(args.batch), "--steps", str(args.steps)]
    command += ["--grad-checkpointing"] if args.grad_checkpointing else []
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"the {mode} launch failed:\n{result.stderr[-3000:]}")
    return json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_base_patch16_224", help="a timm ViT (fresh weights)")
    parser.add_argument("--batch", type=int, default=2, help="images per process and step")
    parser.add_argument("--steps", type=int, default=4, help="timed steps after one untimed one")
    parser.add_argument("--grad-checkpointing", action="store_true", help="run.grad_checkpointing in both modes")
    parser.add_argument("--worker", choices=("ddp", "fsdp"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    ddp, fsdp = launch("ddp", args), launch("fsdp", args)
    gib = 2 ** 30
    print(f"{args.model}: {ddp['params'] / 1e6:.0f}M parameters, batch {args.batch} per process, 2 CPU processes "
          f"(gloo), median of {args.steps} steps")
    print(f"{'':6s} {'peak RSS per process (GiB)':>28s} {'step (s)':>10s}")
    for row in (ddp, fsdp):
        print(f"{row['mode']:6s} {' / '.join(f'{b / gib:.2f}' for b in row['peak_bytes']):>28s} "
              f"{max(row['step_s']):10.2f}")
    print(f"FSDP / DDP: peak memory x{max(fsdp['peak_bytes']) / max(ddp['peak_bytes']):.2f}, "
          f"step time x{max(fsdp['step_s']) / max(ddp['step_s']):.2f}")


if __name__ == "__main__":
    main()
