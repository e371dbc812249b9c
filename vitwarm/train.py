"""One vitwarm run: procedural warm-up, transfer, image training, evaluation.

    accelerate launch [accelerate flags] -m vitwarm.train --config RECIPE.yaml [key=value ...]
    python -m vitwarm.train --config RECIPE.yaml [key=value ...]        # the same in one process

The run is a list of phases (vitwarm.budget.plan_phases); vitwarm.phases builds each one; ``train_phase``
below is the single loop that runs any of them. Randomness is re-seeded from (seed, phase, step) at every
step, and every batch source starts at a sample index, so a run resumed from a checkpoint computes exactly
what the uninterrupted run would have.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from omegaconf import DictConfig
from tqdm import tqdm

from .budget import Phase, plan_phases, vit_flops_per_sample
from .catalog import recipe_names
from .config import ConfigError, flatten, load_config, save_config
from .data import ensure_fmnist_shards, read_dataset_info
from .export import export_run
from .metrics import MetricsLog
from .phases import PHASE_END, PHASE_SETUP, ImageData, PhaseRun, create_vit, derive_seed, evaluate
from .resume import RunState, checkpoint_name, list_checkpoints, load_checkpoint, read_state, save_checkpoint
from .trackers import check_trackers


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


def seed_step(seed: int, phase: str, step: int, rank: int) -> None:
    """Dropout, drop-path and mixup draw from these generators: same seeds, same draws after a resume."""
    s = derive_seed(seed, phase, step, rank)
    torch.manual_seed(s)
    np.random.seed(s)  # noqa: NPY002 (timm's Mixup draws from the legacy global generator)
    random.seed(s)


def train_phase(cfg: DictConfig, phase: Phase, run: PhaseRun, state: RunState, accelerator: Accelerator,
                log: MetricsLog, save, evaluate_now) -> None:
    """Run ``phase`` from ``state.step`` to its end: accumulate, clip, step, log, evaluate, checkpoint."""
    # In a terminal the bar redraws in place; in a log file every redraw is a new line, so update rarely.
    bar = tqdm(total=phase.steps, initial=state.step, desc=phase.name, disable=not accelerator.is_main_process,
               dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30)
    window = {"loss": 0.0, "steps": 0, "start": time.perf_counter(), "counts": {}}
    for step in range(state.step, phase.steps):
        step_started = time.perf_counter()
        # Fetch first: starting a DataLoader iterator draws from torch's global generator, which must
        # not shift the draws of this step (a resumed run starts its iterators at another step).
        micro_batches = [next(run.batches) for _ in range(phase.grad_accum)]
        seed_step(cfg.seed, phase.name, step, accelerator.process_index)
        run.scheduler.step_update(step)
        step_loss = torch.zeros((), device=accelerator.device)
        for micro, batch in enumerate(micro_batches):
            last = micro == phase.grad_accum - 1
            with nullcontext() if last else accelerator.no_sync(run.model):  # all-reduce once per step
                loss, counts = run.loss(run.model, batch)
                accelerator.backward(loss / phase.grad_accum)
            step_loss += loss.detach() / phase.grad_accum
            for name, count in counts.items():
                window["counts"][name] = window["counts"].get(name, 0) + count.detach()
        step_loss = accelerator.reduce(step_loss, reduction="mean")  # every rank sees the same value
        if not torch.isfinite(step_loss):
            raise NonFiniteLoss(f"{phase.name} loss is {step_loss.item()} at step {step}; stopped without "
                                f"applying it. The newest checkpoint in {cfg.run.dir}/checkpoints is intact: "
                                "lower the learning rate or enable gradient clipping, then resume.")
        if phase.grad_clip > 0:
            accelerator.clip_grad_norm_(run.model.parameters(), phase.grad_clip)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        if run.ema is not None:
            run.ema.update(accelerator.unwrap_model(run.model), step=step)
        state.step = step + 1
        state.wall_s[phase.name] = state.wall_s.get(phase.name, 0.0) + time.perf_counter() - step_started
        window["loss"] += step_loss.item()
        window["steps"] += 1
        bar.update(1)

        done = state.step == phase.steps
        if state.step % cfg.log.every_steps == 0 or done:
            record = log_window(phase, state, window, run, accelerator)
            log.write(record)
            state.masked_acc = record.get("masked_acc", state.masked_acc)
            bar.set_postfix(loss=f"{record['loss']:.4f}", samples_s=f"{record['samples_per_s']:.0f}")
        if phase.eval_every and state.step % phase.eval_every == 0 and not done:
            evaluate_now(run, state)
        if state.step % cfg.checkpoint.every_steps == 0 or done:
            save(run, state)
    bar.close()


def log_window(phase: Phase, state: RunState, window: dict, run: PhaseRun, accelerator: Accelerator) -> dict:
    """One metrics record averaged over the steps since the last one; resets the window."""
    seconds = time.perf_counter() - window["start"]
    samples = state.step * phase.global_batch
    record = {"phase": phase.name, "step": state.step, "samples": samples,
              "image_samples": samples if phase.name == "image" else 0,
              "loss": window["loss"] / window["steps"], "lr": run.optimizer.param_groups[0]["lr"],
              "samples_per_s": window["steps"] * phase.global_batch / max(seconds, 1e-9)}
    counts = {k: accelerator.reduce(v, reduction="sum").item() for k, v in window["counts"].items()}
    if "masked" in counts:
        record["masked_acc"] = 100 * counts["correct"] / max(counts["masked"], 1)
    window.update(loss=0.0, steps=0, start=time.perf_counter(), counts={})
    return record


def accelerate_precision(precision: str) -> str:
    """Accelerate's name for a precision: full fp32 is 'no' (mixed precision off)."""
    return "no" if precision == "fp32" else precision


def find_resume_point(cfg: DictConfig) -> Path | None:
    """The checkpoint to continue from, per ``resume``: 'auto' (newest, if any), 'never', or a path."""
    existing = list_checkpoints(cfg.run.dir)
    if cfg.resume == "auto":
        return existing[-1] if existing else None
    if cfg.resume == "never":
        if existing:
            raise ConfigError(f"resume=never but {cfg.run.dir} already holds checkpoints ({existing[-1].name}); "
                              "use resume=auto to continue it or choose another run.dir")
        return None
    return Path(cfg.resume)


def run(cfg: DictConfig) -> dict:
    """The whole run; returns the summary (also written to RUN_DIR/summary.json)."""
    run_dir = Path(cfg.run.dir)
    # Several processes but no GPU (torchrun-style launch on a laptop or CI): Accelerate joins them over gloo
    # only when told to use the CPU; otherwise each process would silently train alone.
    cpu_ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    accelerator = Accelerator(cpu=cpu_ddp, mixed_precision=accelerate_precision(cfg.precision),
                              project_dir=str(run_dir), log_with=check_trackers(cfg.log.trackers) or None)
    checkpoint = find_resume_point(cfg)
    state = read_state(checkpoint) if checkpoint else RunState(model_name=cfg.model.name)
    if state.model_name != cfg.model.name:
        raise ConfigError(f"checkpoint {checkpoint} is of model {state.model_name}, but model.name="
                          f"{cfg.model.name}; resume with the same model or choose another run.dir")
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        if cfg.data.prepare == "fmnist":
            ensure_fmnist_shards(cfg.data.source, fraction=cfg.data.train_fraction)
    accelerator.wait_for_everyone()

    with torch.device("meta"):  # shapes only, no memory: for the budget's FLOP estimate and the image size
        probe = create_vit(cfg, "probe")
    info = read_dataset_info(cfg.data.source, cfg.data.train_split)
    phases = plan_phases(cfg, train_samples=info.num_samples, world_size=accelerator.num_processes,
                         flops_per_sample=vit_flops_per_sample(probe, probe.patch_embed.num_patches))
    images = ImageData.open(cfg, accelerator, info, img_size=probe.patch_embed.img_size[0],
                            micro_batch=phases[-1].micro_batch)
    log = MetricsLog(run_dir, accelerator, phase_order=[p.name for p in phases])
    log.truncate_after(state.phase, state.step)
    if cfg.log.trackers:
        accelerator.init_trackers(cfg.log.project, config=flatten(cfg))
    accelerator.print(f"vitwarm: {accelerator.num_processes} process(es) on {accelerator.device}; plan:")
    for phase in phases:
        accelerator.print(f"  {phase.name:7s} {phase.steps} steps x {phase.global_batch} = {phase.samples} "
                          f"samples, ~{phase.flops:.2e} FLOP")
    if checkpoint:
        accelerator.print(f"vitwarm: resuming from {checkpoint} ({state.phase} step {state.step})")

    def save(run: PhaseRun, state: RunState) -> None:
        index = [p.name for p in phases].index(state.phase)
        if accelerator.is_main_process:
            save_checkpoint(run_dir, checkpoint_name(index, state.phase, state.step), state,
                            accelerator.unwrap_model(run.model), run.optimizer, run.ema, cfg.checkpoint.keep)
        accelerator.wait_for_everyone()

    def evaluate_now(run: PhaseRun, state: RunState) -> None:
        result = evaluate(accelerator.unwrap_model(run.model), images.val, accelerator)
        log.write({"event": "eval", "phase": "image", "step": state.step, "split": cfg.data.val_split,
                   "image_samples": state.step * phases[-1].global_batch} | result)
        accelerator.print(f"  eval @ step {state.step}: {cfg.data.val_split} top-1 {result['top1']:.2f}%")

    offset = 0
    for phase in phases:
        log.step_offset[phase.name] = offset
        offset += phase.steps
        if phase.name in state.finished and phase.name != phases[-1].name:
            continue
        resuming = state.phase == phase.name
        start_step = state.step if resuming else 0
        run = PHASE_SETUP[phase.name](cfg, phase, accelerator, images, start_step)
        if resuming:
            load_checkpoint(checkpoint, accelerator.unwrap_model(run.model), run.optimizer, run.ema)
        else:
            state.phase, state.step = phase.name, 0
        train_phase(cfg, phase, run, state, accelerator, log, save, evaluate_now)
        if phase.name not in state.finished:
            state.finished.append(phase.name)
        if phase.name in PHASE_END:
            accelerator.print(PHASE_END[phase.name](cfg, run, accelerator, images, run_dir))
        save(run, state)  # the phase-end checkpoint, now marking the phase finished
        if phase.name != phases[-1].name:
            del run
            accelerator.free_memory()  # the next phase prepares its own model and optimizer
    summary = finish(cfg, run, state, phases, images, accelerator, log)
    accelerator.end_training()
    return summary


def finish(cfg: DictConfig, run: PhaseRun, state: RunState, phases: list[Phase], images: ImageData,
           accelerator: Accelerator, log: MetricsLog) -> dict:
    """Final evaluation, the exported image model and summary.json."""
    model = accelerator.unwrap_model(run.model)
    image_phase = phases[-1]
    final = {"event": "eval", "phase": "image", "step": state.step, "image_samples": image_phase.samples}
    val = evaluate(model, images.val, accelerator)
    log.write(final | {"split": cfg.data.val_split} | val)
    test = evaluate(model, images.test, accelerator) if images.test is not None else {}
    if test:
        log.write(final | {"split": cfg.data.test_split} | test)
    ema = evaluate(run.ema.module, images.val, accelerator) if run.ema is not None else {}
    warm = next((p for p in phases if p.name == "warmup"), None)
    summary = {
        "top1": val["top1"], "top5": val["top5"], "split": cfg.data.val_split,
        "test_top1": test.get("top1"), "test_top5": test.get("top5"), "ema_top1": ema.get("top1"),
        "image_samples": image_phase.samples, "warmup_samples": warm.samples if warm else 0,
        "masked_acc": state.masked_acc, "wall_s": sum(state.wall_s.values()),
        "skipped_samples": getattr(images.train, "skipped", 0),
        "phases": {p.name: p.as_dict() | {"wall_s": state.wall_s.get(p.name, 0.0)} for p in phases},
    }
    if accelerator.is_main_process:
        export_run(cfg, model, "model")  # RUN_DIR/model/: a timm hub folder, head included
        (Path(cfg.run.dir) / "summary.json").write_text(json.dumps(summary, indent=1))
    test_line = f", {cfg.data.test_split} top-1 {test['top1']:.2f}%" if test else ""
    accelerator.print(f"vitwarm: done. {cfg.data.val_split} top-1 {val['top1']:.2f}% "
                      f"(top-5 {val['top5']:.2f}%){test_line}; summary in {cfg.run.dir}/summary.json")
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m vitwarm.train",
        description="Procedural warm-up then image training of a timm ViT. Run under `accelerate launch "
                    "[flags] -m vitwarm.train ...` for several processes.",
        epilog="Example: accelerate launch -m vitwarm.train --config recipes/fmnist_demo.yaml "
               "warmup.fraction=0.05 seed=1 run.dir=runs/f05_s1. Packaged recipes (--config NAME): "
               + ", ".join(recipe_names()))
    parser.add_argument("--config", required=True, help="recipe YAML: a path or a packaged name (vitwarm-recipes list)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. warmup.fraction=0.01 procedural.grammar=ww")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        run(cfg)
    except (ConfigError, NonFiniteLoss, ValueError, FileNotFoundError) as err:
        # Bad configs, data or checkpoints: the message names the problem; a traceback would bury it.
        sys.exit(f"vitwarm: error: {err}")


if __name__ == "__main__":
    main()
