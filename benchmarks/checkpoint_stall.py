"""The training step's stall around a checkpoint of a ViT-B-sized model: written in the step (before) against
copied to CPU memory and written in the background (after).

A ViT-B/16 (86.6M parameters) with AdamW moments (about 1 GB of checkpoint) and a ViT-B-sized warm-up export
in a temporary run directory. Steps are a fixed matmul workload in one thread (a stand-in of constant
length for the training step, so that only the checkpoint changes the time). At step ``--at`` a checkpoint is
taken:

- before: as the previous release did, in the step: every export file hashed again, the files written and
  hashed, then the step goes on;
- after: as now (vitwarm.run.context.Launch.save): the exports' hashes reused (hashed once, at the first
  checkpoint; here before the timed window), the content copied to CPU memory, the write handed to the
  background thread (vitwarm.run.saver), and the steps go on while it writes.

The stall is the wall time of the steps from the checkpoint's to ``--after`` steps later, minus as many
steps of the median step time measured before the checkpoint; printed for both and the ratio after / before.

    python benchmarks/checkpoint_stall.py [--after 20] [--rounds 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import timm
import torch

from vitwarm.atomic import write_safetensors
from vitwarm.models import unique_state_dict
from vitwarm.run.checkpoints import RunState, save_checkpoint
from vitwarm.run.rundir import WARMUP_EXPORT, hash_exports
from vitwarm.run.saver import BackgroundSaver, Snapshot, snapshot


def step_workload(a: torch.Tensor) -> None:
    """A constant-length stand-in of a training step (single-threaded matmuls)."""
    for _ in range(8):
        a @ a


def timed_steps(n: int, a: torch.Tensor, at: int, checkpoint) -> tuple[list[float], float]:
    """Wall times of ``n`` steps, of which step ``at`` also takes the checkpoint; and the checkpoint call's time."""
    times = []
    for i in range(n):
        start = time.perf_counter()
        step_workload(a)
        if i == at:
            call = time.perf_counter()
            checkpoint()
            call = time.perf_counter() - call
        times.append(time.perf_counter() - start)
    return times, call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before-steps", type=int, default=10, help="steps timed before the checkpoint")
    parser.add_argument("--after", type=int, default=20, help="steps after the checkpoint's counted in its stall")
    parser.add_argument("--size", type=int, default=768, help="matmul size of the stand-in step")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = timm.create_model("vit_base_patch16_224", num_classes=1000)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # the moments exist: a checkpoint as large as in training
    a = torch.randn(args.size, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        write_safetensors(run_dir / WARMUP_EXPORT / "model.safetensors", unique_state_dict(model))
        state = RunState(phase="image", model_name="vit_base_patch16_224")
        known: dict = {}
        hash_exports(run_dir, known)  # the run's first checkpoint hashed the export: later ones reuse it
        saver = BackgroundSaver()

        def before() -> None:
            state.exports = hash_exports(run_dir)
            content = Snapshot(state=asdict(state), model=unique_state_dict(model),
                               optimizer=optimizer.state_dict(), ema=None)
            save_checkpoint(run_dir, "1-image-00000001", content, keep=1)

        def after() -> None:
            state.exports = hash_exports(run_dir, known)
            content = snapshot(state, model, optimizer, None)
            saver.submit(lambda: save_checkpoint(run_dir, "1-image-00000002", content, keep=1))

        stalls, committed, calls = {}, {}, {}
        for name, checkpoint in (("before", before), ("after", after)):
            start = time.perf_counter()
            steps, calls[name] = timed_steps(args.before_steps + 1 + args.after, a, args.before_steps, checkpoint)
            saver.wait()  # after: the background write's end (before: ended in the step)
            committed[name] = time.perf_counter() - start - sum(steps[:args.before_steps])
            step = statistics.median(steps[:args.before_steps])
            stalls[name] = (sum(steps[args.before_steps:]) - (1 + args.after) * step, step)
    print(f"\nViT-B/16 + AdamW checkpoint (~1 GB) and a ViT-B warm-up export (~0.35 GB); stand-in step "
          f"{stalls['before'][1] * 1e3:.0f} ms; the checkpoint's step and {args.after} after it")
    for name, (stall, _) in stalls.items():
        print(f"{name:<8} stall {stall:7.2f} s   of which in the checkpoint call {calls[name]:6.2f} s   "
              f"committed {committed[name]:6.2f} s after its step began")
    print(f"ratio after / before: {stalls['after'][0] / stalls['before'][0]:.3f}")


if __name__ == "__main__":
    main()
