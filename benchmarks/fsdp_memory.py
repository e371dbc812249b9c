"""What sharding buys: peak resident memory per process and step time of one ViT under DDP and under FSDP
(run.parallel=fsdp), each with 2 CPU processes over gloo, printed as FSDP / DDP ratios.

    python benchmarks/fsdp_memory.py --model vit_base_patch16_224 --batch 2 --steps 4

Each mode is one ``accelerate launch`` of this file (recipes/accelerate/cpu_ddp.yaml: 2 processes) that builds
the model, shards or wraps it the way a run does (vitwarm.run.fsdp.shard, then
vitwarm.run.phases.common.prepare: Accelerate's DDP, or nothing more under FSDP), and trains ``--steps``
steps of fused AdamW on random images after one untimed step. Resident memory is read from /proc/self/status:
``baseline`` after the imports (the interpreter, torch and its libraries, which no sharding removes),
``training`` the high-water mark of the training steps alone (reset before the first, which allocates the
gradients and AdamW's moments), ``process`` the high-water mark of the whole process (building the whole
model before it is sharded included). glibc keeps freed large blocks in its heap once its mmap threshold has
grown past them, which would hide what sharding frees; both modes run with MALLOC_MMAP_THRESHOLD_=65536 so
that resident memory follows the live tensors.
"""

from __future__ import annotations

import argparse
import json
import os
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
    baseline = resident()["VmRSS"]
    cfg = OmegaConf.create({"run": {"parallel": args.worker, "grad_checkpointing": args.grad_checkpointing},
                            "precision": "fp32", "train": {"compile": False}})
    torch.manual_seed(0)
    model = shard(cfg, accelerator, timm.create_model(args.model, num_classes=1000))
    optimizer = create_optimizer_v2(model, opt="adamw", lr=1e-4, weight_decay=0.05, fused=True)
    model, optimizer, _ = prepare(cfg, accelerator, model, optimizer)
    size = accelerator.unwrap_model(model).patch_embed.img_size  # (H, W)
    images, labels = torch.randn(args.batch, 3, *size), torch.randint(0, 1000, (args.batch,))
    process_peak = resident()["VmHWM"]
    Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM starts again from the current VmRSS
    times = []
    for _ in range(args.steps + 1):
        started = time.perf_counter()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - started)
    training = resident()["VmHWM"]
    row = [baseline, training, max(process_peak, training), statistics.median(times[1:])]
    rows = accelerator.gather(torch.tensor([row], dtype=torch.float64)).tolist()
    if accelerator.is_main_process:
        params = sum(p.numel() for p in timm.create_model(args.model, pretrained=False).parameters())
        print(json.dumps({"mode": args.worker, "params": params, "rows": rows}))


def resident() -> dict[str, int]:
    """VmRSS and VmHWM (its high-water mark) of this process, in bytes."""
    lines = Path("/proc/self/status").read_text().splitlines()
    return {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in lines) if k in ("VmRSS", "VmHWM")}


def launch(mode: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / "recipes/accelerate/cpu_ddp.yaml"), __file__, "--worker", mode, "--model", args.model,
               "--batch", str(args.batch), "--steps", str(args.steps)]
    command += ["--grad-checkpointing"] if args.grad_checkpointing else []
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "MALLOC_MMAP_THRESHOLD_": "65536"}
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
          f"(gloo), median of {args.steps} steps; resident memory per process, the larger of the two (GiB)")
    print(f"{'':6s} {'baseline':>9s} {'training':>9s} {'above baseline':>15s} {'process':>8s} {'step (s)':>9s}")
    worst = {}
    for row in (ddp, fsdp):
        baseline, training, process, step = (max(r[i] for r in row["rows"]) for i in range(4))
        worst[row["mode"]] = (training, training - baseline, process, step)
        print(f"{row['mode']:6s} {baseline / gib:9.2f} {training / gib:9.2f} {(training - baseline) / gib:15.2f} "
              f"{process / gib:8.2f} {step:9.2f}")
    ratios = [f / d for f, d in zip(worst["fsdp"], worst["ddp"])]
    print("FSDP / DDP: training peak x{:.2f}, above baseline x{:.2f}, process peak x{:.2f}, step time x{:.2f}"
          .format(*ratios))

if __name__ == "__main__":
    main()
