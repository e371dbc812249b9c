"""One warm-up-only run: steps and FLOPs to the warm-up's learning transition and to its plateau.

The warm-up is built by the trainer's own warm-up kind (model, optimizer, warm-up-stable-decay schedule, token
stream, probe and stop rule: vitwarm.run.phases.warmup) and runs for at most ``--max-steps`` steps, probed every
``warmup.probe.every_steps``, until ``warmup.stop=plateau`` decides to stop. Its row gives the step (and training
FLOPs, 3 x forward) at which the probe first rose ``warmup.stop_rise`` points above its step-0 level (the
transition) and at which the plateau rule stopped, with the probe curve; it is written to
``OUT/transition.json`` whole or not at all, so a present file is a finished run. A study's ``transition``
stage runs one such command per cell and seed through the sweep launchers (vitwarm.sweeps.study);
benchmarks/transition.py runs and tabulates grids of them by hand.

    python -m vitwarm.sweeps.transition --config recipes/fmnist_repro.yaml --max-steps 1500 --out DIR \\
        warmup.batch_size=8 warmup.seq_len=16 seed=0
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from vitwarm.atomic import atomic_write_text
from vitwarm.config import load_config
from vitwarm.errors import one_line_errors
from vitwarm.run.checkpoints import RunState
from vitwarm.run.phases import KINDS
from vitwarm.run.plan import Phase, to_steps, vit_flops_per_sample
from vitwarm.run.plateau import transition_index
from vitwarm.run.rundir import environment, identity
from vitwarm.seeds import seed_step

RESULT = "transition.json"
# Overrides every measurement runs with, before the caller's: the plateau decision is what is measured, and
# the token stream is made in the training process (one process, nothing to share out).
FIXED = ("warmup.stop=plateau", "warmup.num_workers=0")


def warmup_phase(cfg, max_steps: int) -> Phase:
    """A warm-up of ``max_steps`` steps of the config's batch, one process, probed at its own cadence."""
    batch = cfg.warmup.batch_size
    return Phase(name="warmup", kind="warmup", init="fresh", final=False, steps=max_steps, global_batch=batch,
                 micro_batch=batch, grad_accum=1,
                 lr_warmup_steps=to_steps(fraction=cfg.warmup.lr_warmup_fraction, of_steps=max_steps),
                 eval_every=0, log_every=1, save_every=max_steps, grad_clip=cfg.warmup.grad_clip, flops=0.0)


def run_cell(cfg, max_steps: int, accelerator: Accelerator) -> dict:
    """One warm-up until the plateau decision or ``max_steps``; its transition, plateau and probe curve."""
    phase = warmup_phase(cfg, max_steps)
    training = KINDS["warmup"].setup(cfg, phase, accelerator, None, 0)
    model, watch, state = training.model, training.watch, RunState(phase="warmup")
    seq_len = watch.batches[0]["tokens"].shape[1]
    seq_flops = 3 * vit_flops_per_sample(model.vit, seq_len)  # per training sequence
    watch.begin(model, state)
    started = time.perf_counter()
    while state.step < max_steps and state.stop_step is None:
        batch = next(training.batches)
        seed_step(cfg.seed, phase.name, state.step, 0)
        training.scheduler.step_update(state.step)
        loss, _ = training.loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), phase.grad_clip)
        training.optimizer.step()
        training.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        if watch.due(state.step, 1, done=state.step == max_steps):
            watch.probe(model, state)
    accs = [acc for _, acc in state.probe]
    rise = transition_index(accs, cfg.warmup.stop_rise)
    transition = None if rise is None else state.probe[rise][0]
    flops_per_step = seq_flops * phase.global_batch
    return {"seq_len": seq_len, "transition_step": transition, "plateau_step": state.stop_step,
            "transition_flops": None if transition is None else transition * flops_per_step,
            "plateau_flops": None if state.stop_step is None else state.stop_step * flops_per_step,
            "start_acc": accs[0], "plateau_acc": accs[-1] if state.stop_step is not None else None,
            "last_acc": accs[-1], "steps_run": state.step, "wall_s": time.perf_counter() - started,
            "curve": state.probe, "flops_per_step": flops_per_step}


def core_name(cfg) -> str:
    """'' for a warm-up of the image model itself, else the warm-up model's kwargs (a grown core)."""
    w = cfg.warmup.model
    if not w.name and not w.kwargs:
        return ""
    kwargs = ",".join(f"{k}={v}" for k, v in sorted(w.kwargs.items()))
    return f"{w.name or cfg.model.name}({kwargs}{',shared_middle' if w.shared_middle else ''})"


def measure(base: str | Path, overrides: list[str], max_steps: int, accelerator: Accelerator) -> dict:
    """The row of one warm-up of ``base`` with ``overrides``: its setting, seed, result, machine and identity."""
    cfg = load_config(base, [*FIXED, *overrides])
    row = {"batch": cfg.warmup.batch_size, "lr": cfg.warmup.lr, "k": cfg.procedural.params.get("k"),
           "model": core_name(cfg), "seed": cfg.seed} | run_cell(cfg, max_steps, accelerator)
    return row | {"environment": environment(str(accelerator.device), 1), "identity": identity(cfg)}


def planned_identity(base: str | Path, overrides: list[str]) -> dict:
    """The identity :func:`measure` records for these overrides (bad overrides raise ConfigError)."""
    return identity(load_config(base, [*FIXED, *overrides]))


def read_rows(run_dir: str | Path) -> list[dict] | None:
    """The rows of a finished measurement in ``run_dir``, or None (none yet, or it does not parse)."""
    try:
        rows = json.loads((Path(run_dir) / RESULT).read_text())
    except (OSError, ValueError):
        return None
    return rows if isinstance(rows, list) else None


def same_identity(recorded: dict | None, planned: dict) -> bool:
    return json.dumps(recorded, sort_keys=True, default=str) == json.dumps(planned, sort_keys=True, default=str)


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="recipe whose model and warm-up to use")
    parser.add_argument("--max-steps", type=int, required=True, help="the cap of the warm-up")
    parser.add_argument("--out", type=Path, required=True, help="the run's folder (transition.json)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    row = measure(args.config, args.overrides, args.max_steps, Accelerator(cpu=not torch.cuda.is_available()))
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / RESULT, json.dumps([row], indent=1))
    print(f"transition at {row['transition_step']}, plateau at {row['plateau_step']} ({row['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
