"""What sharding buys: peak memory per process and step time of one ViT under DDP and under FSDP
(run.parallel=fsdp), each with 2 CPU processes over gloo (or every GPU, ``--device cuda``), printed as
FSDP / DDP ratios.

    python benchmarks/fsdp_memory.py --model vit_base_patch16_224 --batch 2 --steps 4
    python benchmarks/fsdp_memory.py --device cuda --model vit_large_patch16_224 --batch 64 --precision bf16 \
        [--grad-checkpointing]      # GPU memory from torch.cuda; benchmarks/gpu_check.sh runs this case

Each mode is one ``accelerate launch`` of this file (recipes/accelerate/cpu_ddp.yaml: 2 processes; on GPUs one
process per GPU, Accelerate's torchrun launcher) that builds
the model, shards or wraps it the way a run does (vitwarm.run.fsdp.shard, then
vitwarm.run.phases.common.prepare: Accelerate's DDP, or nothing more under FSDP), and trains ``--steps``
steps of fused AdamW on random images after one untimed step. Resident memory is read from /proc/self/status:
``baseline`` after the imports (the interpreter, torch and its libraries, which no sharding removes),
``training`` the high-water mark of the training steps alone (reset before the first, which allocates the
gradients and AdamW's moments), ``process`` the high-water mark of the whole process (building the whole
model before it is sharded included). glibc keeps freed large blocks in its heap once its mmap threshold has
grown past them, which would hide what sharding frees; both modes run with MALLOC_MMAP_THRESHOLD_=65536 so
that resident memory follows the live tensors. On GPUs the figures are torch's allocator peaks
(``torch.cuda.max_memory_allocated``): baseline 0, ``training`` reset before the first timed step's allocation
as above, ``process`` the whole process's; ``precision bf16`` shards with bf16 weights and fp32 reduction
(vitwarm.run.fsdp) and runs DDP under Accelerate's bf16 autocast, as runs do.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
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

    cuda = args.device == "cuda"
    accelerator = Accelerator(cpu=not cuda, mixed_precision="bf16" if args.precision == "bf16" else "no")
    baseline = 0 if cuda else resident()["VmRSS"]
    cfg = OmegaConf.create({"run": {"parallel": args.worker, "grad_checkpointing": args.grad_checkpointing},
                            "precision": args.precision, "train": {"compile": False}})
    torch.manual_seed(0)
    model = shard(cfg, accelerator, timm.create_model(args.model, num_classes=1000))
    optimizer = create_optimizer_v2(model, opt="adamw", lr=1e-4, weight_decay=0.05, fused=True)
    model, optimizer, _ = prepare(cfg, accelerator, model, optimizer)
    size = accelerator.unwrap_model(model).patch_embed.img_size  # (H, W)
    images = torch.randn(args.batch, 3, *size, device=accelerator.device)
    labels = torch.randint(0, 1000, (args.batch,), device=accelerator.device)
    if cuda:
        process_peak = torch.cuda.max_memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        process_peak = resident()["VmHWM"]
        Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM starts again from the current VmRSS
    times = []
    for _ in range(args.steps + 1):
        started = time.perf_counter()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()  # the step's kernels have run before its time is taken
        times.append(time.perf_counter() - started)
    training = torch.cuda.max_memory_allocated() if cuda else resident()["VmHWM"]
    row = [baseline, training, max(process_peak, training), statistics.median(times[1:])]
    rows = accelerator.gather(torch.tensor([row], dtype=torch.float64, device=accelerator.device)).tolist()
    if accelerator.is_main_process:
        params = sum(p.numel() for p in timm.create_model(args.model, pretrained=False).parameters())
        print(json.dumps({"mode": args.worker, "params": params, "rows": rows, "processes": accelerator.num_processes}))


def resident() -> dict[str, int]:
    """VmRSS and VmHWM (its high-water mark) of this process, in bytes."""
    lines = Path("/proc/self/status").read_text().splitlines()
    return {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in lines) if k in ("VmRSS", "VmHWM")}


def launch(mode: str, args: argparse.Namespace) -> dict:
    if args.device == "cuda":  # one process per GPU; torchrun's launcher only with more than one
        gpus = torch.cuda.device_count()
        where = ["--num_machines", "1", "--num_processes", str(gpus), "--mixed_precision", "no",
                 *(["--multi_gpu"] if gpus > 1 else [])]
    else:
        where = ["--config_file", str(ROOT / "recipes/accelerate/cpu_ddp.yaml")]
    # A free port for the rendezvous: the config's fixed one may be taken by another launch on this machine.
    where += ["--main_process_port", str(free_port())]
    command = [sys.executable, "-m", "accelerate.commands.launch", *where, __file__, "--worker", mode,
               "--model", args.model, "--batch", str(args.batch), "--steps", str(args.steps),
               "--device", args.device, "--precision", args.precision]
    command += ["--grad-checkpointing"] if args.grad_checkpointing else []
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    if args.device == "cpu":
        env |= {"OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"the {mode} launch failed:\n{result.stderr[-3000:]}")
    return json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compare(args: argparse.Namespace, modes=("ddp", "fsdp")) -> dict:
    """Each mode's worst process (baseline, training peak, process peak in bytes; step s; images/s over all
    processes), and FSDP / DDP ratios when both ran."""
    found = {}
    for mode in modes:
        launched = launch(mode, args)
        baseline, training, process, step = (max(r[i] for r in launched["rows"]) for i in range(4))
        found[mode] = {"params": launched["params"], "processes": launched["processes"], "baseline": baseline,
                       "training": training, "process": process, "step_s": step,
                       "images_per_s": args.batch * launched["processes"] / step}
    if len(found) == 2:
        ddp, fsdp = found["ddp"], found["fsdp"]
        above = [r["training"] - r["baseline"] for r in (fsdp, ddp)]
        found["ratios"] = {"training": fsdp["training"] / ddp["training"], "above_baseline": above[0] / above[1],
                           "process": fsdp["process"] / ddp["process"], "step": fsdp["step_s"] / ddp["step_s"]}
    return found


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_base_patch16_224", help="a timm ViT (fresh weights)")
    parser.add_argument("--batch", type=int, default=2, help="images per process and step")
    parser.add_argument("--steps", type=int, default=4, help="timed steps after one untimed one")
    parser.add_argument("--grad-checkpointing", action="store_true", help="run.grad_checkpointing in both modes")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cpu: 2 processes over gloo (default); cuda: one process per visible GPU")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="the runs' precision key: bf16 weights under FSDP, bf16 autocast under DDP (GPUs)")
    parser.add_argument("--worker", choices=("ddp", "fsdp"), help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = parser().parse_args()
    if args.worker:
        return worker(args)
    try:
        found = compare(args)
    except RuntimeError as err:
        sys.exit(str(err))
    gib, ddp = 2 ** 30, found["ddp"]
    where = f"{ddp['processes']} GPU process(es)" if args.device == "cuda" else "2 CPU processes (gloo)"
    memory = "GPU memory allocated" if args.device == "cuda" else "resident memory"
    print(f"{args.model}: {ddp['params'] / 1e6:.0f}M parameters, batch {args.batch} per process, {where}, "
          f"{args.precision}, median of {args.steps} steps; {memory} per process, the larger (GiB)")
    print(f"{'':6s} {'baseline':>9s} {'training':>9s} {'above baseline':>15s} {'process':>8s} {'step (s)':>9s} "
          f"{'img/s':>8s}")
    for mode in ("ddp", "fsdp"):
        r = found[mode]
        print(f"{mode:6s} {r['baseline'] / gib:9.2f} {r['training'] / gib:9.2f} "
              f"{(r['training'] - r['baseline']) / gib:15.2f} {r['process'] / gib:8.2f} {r['step_s']:9.2f} "
              f"{r['images_per_s']:8.1f}")
    print("FSDP / DDP: training peak x{training:.2f}, above baseline x{above_baseline:.2f}, process peak "
          "x{process:.2f}, step time x{step:.2f}".format(**found["ratios"]))


if __name__ == "__main__":
    main()
