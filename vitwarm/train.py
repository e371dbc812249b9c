"""One vitwarm run: procedural warm-up, transfer, image training, evaluation.

    accelerate launch [accelerate flags] -m vitwarm.train --config RECIPE.yaml [key=value ...]
    python -m vitwarm.train --config RECIPE.yaml [key=value ...]        # the same in one process

The run is a list of phases (vitwarm.budget.plan_phases), each carrying its role; vitwarm.phases builds each
one; ``train_phase`` below is the single loop that runs any of them (its per-step bookkeeping is
vitwarm.step). Randomness is re-seeded from (seed, phase, step) at every step, and every batch source
starts at a sample index, so a run resumed from a checkpoint computes exactly what the uninterrupted run
would have.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import Accelerator
from omegaconf import DictConfig
from tqdm import tqdm

from .budget import Phase
from .catalog import recipe_names
from .config import flatten, load_config
from .data import ensure_fmnist_shards, read_splits
from .errors import ArgumentParser, one_line_errors
from .export import export_run
from .metrics import MetricsLog, window_record
from .phases import PHASE_END, PHASE_SETUP, ImageData, PhaseRun, evaluate
from .preflight import Plan, preflight
from .resume import RunState, Start, checkpoint_name, load_checkpoint, save_checkpoint, where_to_start
from .rundir import (
    CHECKPOINTS,
    SUMMARY,
    Summary,
    check_hashes,
    environment,
    eval_record,
    hash_exports,
    write_config,
    write_summary,
)
from .seeds import seed_step
from .step import Pending, add_counts, guarded_step
from .trackers import check_trackers


def accelerate_precision(precision: str) -> str:
    """Accelerate's name for a precision: full fp32 is 'no' (mixed precision off)."""
    return "no" if precision == "fp32" else precision


def run(cfg: DictConfig) -> dict:
    """The whole run; returns the summary (also written to RUN_DIR/summary.json)."""
    # Every phase planned and dry-built before shards, run directory or process group exist.
    plan = preflight(cfg, world_size=int(os.environ.get("WORLD_SIZE", "1")))
    # Several processes but no GPU (torchrun-style launch on a laptop or CI): Accelerate joins them over gloo
    # only when told to use the CPU; otherwise each process would silently train alone.
    cpu_ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    accelerator = Accelerator(cpu=cpu_ddp, mixed_precision=accelerate_precision(cfg.precision),
                              project_dir=cfg.run.dir, log_with=check_trackers(cfg.log.trackers) or None)
    start = where_to_start(cfg)
    for warning in start.warnings:
        accelerator.print(warning)
    if start.finished:
        accelerator.print(f"vitwarm: {cfg.run.dir} is already finished ({start.finished.split} top-1 "
                          f"{start.finished.top1:.2f}%); nothing to do")
        return asdict(start.finished)
    images = open_data(cfg, plan, accelerator)
    log = open_log(cfg, start, accelerator)
    accelerator.print(f"vitwarm: {accelerator.num_processes} process(es) on {accelerator.device}; plan:")
    for phase in plan.phases:
        accelerator.print(f"  {phase.name:7s} {phase.steps} steps x {phase.global_batch} = {phase.samples} "
                          f"samples, ~{phase.flops:.2e} FLOP")
    if start.checkpoint:
        accelerator.print(f"vitwarm: resuming from {start.checkpoint} ({start.state.phase} step {start.state.step})")
    final = run_phases(cfg, plan, start, images, accelerator, log)
    summary = finish(cfg, final, start.state, plan, images, accelerator, log)
    accelerator.end_training()
    return summary


def open_data(cfg: DictConfig, plan: Plan, accelerator: Accelerator) -> ImageData:
    """Write the shards if the config prepares them, find the splits, record the config, open the loaders."""
    if accelerator.is_main_process and cfg.data.prepare == "fmnist":
        ensure_fmnist_shards(cfg.data.source, fraction=cfg.data.train_fraction)
    accelerator.wait_for_everyone()
    splits = read_splits(cfg.data)  # before the run directory: refuses evaluation splits that hold training shards
    if accelerator.is_main_process:
        write_config(cfg.run.dir, cfg)
    accelerator.wait_for_everyone()
    return ImageData.open(cfg, splits, img_size=plan.img_size, micro_batch=plan.final.micro_batch,
                          rank=accelerator.process_index, world_size=accelerator.num_processes,
                          pin_memory=accelerator.device.type == "cuda")


def open_log(cfg: DictConfig, start: Start, accelerator: Accelerator) -> MetricsLog:
    """metrics.jsonl as the checkpoint left it, plus the trackers."""
    log = MetricsLog(cfg.run.dir, accelerator)
    # A checkpoint of another run directory (resume=PATH) counted that run's records, not this one's.
    own = start.checkpoint is None or start.checkpoint.parent.resolve() == (Path(cfg.run.dir) / CHECKPOINTS).resolve()
    log.restore(start.state.records if own else 0)
    if start.checkpoint and start.changes:
        log.write({"event": "config_changed", "phase": start.state.phase, "step": start.state.step,
                   "changes": start.changes})
    if cfg.log.trackers:
        accelerator.init_trackers(cfg.log.project, config=flatten(cfg))
    return log


def run_phases(cfg: DictConfig, plan: Plan, start: Start, images: ImageData, accelerator: Accelerator,
               log: MetricsLog) -> PhaseRun:
    """Every phase not yet finished, in order, each ending with its end action and checkpoint; returns the
    final phase's run (its model is the one evaluated)."""
    run_dir, state = Path(cfg.run.dir), start.state
    skipped_counted = 0  # of this process's train-loader skips, those already in state.skipped_samples

    def save(phase: Phase, run: PhaseRun, state: RunState) -> None:
        nonlocal skipped_counted
        new = torch.tensor(images.train.skipped - skipped_counted, device=accelerator.device)
        skipped_counted = images.train.skipped
        state.skipped_samples += int(accelerator.reduce(new, reduction="sum").item())
        if accelerator.is_main_process:
            log.sync()
            state.records = log.count
            state.exports = hash_exports(run_dir)
            save_checkpoint(run_dir, checkpoint_name(plan.phases.index(phase), phase.name, state.step), state,
                            accelerator.unwrap_model(run.model), run.optimizer, run.ema, cfg.checkpoint.keep)
        accelerator.wait_for_everyone()

    def evaluate_now(phase: Phase, run: PhaseRun, state: RunState) -> None:
        result = evaluate(accelerator.unwrap_model(run.model), images.val, accelerator)
        log.write(eval_record(phase.name, state.step, cfg.data.val_split, state.step * phase.global_batch, result))
        accelerator.print(f"  eval @ step {state.step}: {cfg.data.val_split} top-1 {result['top1']:.2f}%")

    offset = 0
    for phase in plan.phases:
        log.step_offset[phase.name] = offset
        offset += phase.steps
        if phase.name in state.finished and not phase.final:
            # Done, unless the next phase has yet to read this one's export and the export is damaged.
            damaged = state.phase == phase.name and state.exports and check_hashes(run_dir, state.exports)
            if not damaged:
                continue
            accelerator.print(f"vitwarm: warning: {run_dir}: {damaged}; redoing the end of phase {phase.name}")
        resuming = state.phase == phase.name
        run = PHASE_SETUP[phase.trains_on](cfg, phase, accelerator, images, state.step if resuming else 0)
        if resuming:
            load_checkpoint(start.checkpoint, accelerator.unwrap_model(run.model), run.optimizer, run.ema)
        else:
            state.phase, state.step = phase.name, 0
        train_phase(cfg, phase, run, state, accelerator, log, save, evaluate_now)
        if phase.name not in state.finished:
            state.finished.append(phase.name)
        if phase.end:
            accelerator.print(PHASE_END[phase.end](cfg, run, accelerator, images, run_dir))
        save(phase, run, state)  # the phase-end checkpoint, marking the phase finished
        if not phase.final:
            del run
            accelerator.free_memory()  # the next phase prepares its own model and optimizer
    return run


def train_phase(cfg: DictConfig, phase: Phase, run: PhaseRun, state: RunState, accelerator: Accelerator,
                log: MetricsLog, save, evaluate_now) -> None:
    """Run ``phase`` from ``state.step`` to its end: accumulate, guard, clip, step, log, evaluate, checkpoint.

    No step reads a device value on the host; ``add_counts`` (vitwarm.step) is the one sync, before a log
    record, an evaluation or a checkpoint. The phase-end checkpoint is the caller's (after the phase-end
    action), so no step is saved twice.
    """
    # In a terminal the bar redraws in place; in a log file every redraw is a new line, so update rarely.
    # Closed on any exit, so an error message starts on a line of its own.
    with tqdm(total=phase.steps, initial=state.step, desc=phase.name, disable=not accelerator.is_main_process,
              dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30) as bar:
        window_start = time.perf_counter()
        pending = Pending(accelerator.device)
        trained = [p for p in run.model.parameters() if p.requires_grad]
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
                pending.add_counts(counts)
            finite = pending.add_loss(step, step_loss)
            if phase.grad_clip > 0:  # on the device: the norm and the clip factor stay tensors
                accelerator.clip_grad_norm_(run.model.parameters(), phase.grad_clip)
            guarded_step(run.optimizer, trained, finite)
            run.optimizer.zero_grad(set_to_none=True)
            if run.ema is not None:
                run.ema.update(accelerator.unwrap_model(run.model), step=step)
            state.step = step + 1
            state.wall_s[phase.name] = state.wall_s.get(phase.name, 0.0) + time.perf_counter() - step_started
            state.window_steps += 1
            bar.update(1)

            done = state.step == phase.steps
            log_now = state.step % phase.log_every == 0 or done
            eval_now = phase.eval_every and state.step % phase.eval_every == 0 and not done
            save_now = state.step % phase.save_every == 0 and not done
            if log_now or eval_now or save_now:
                add_counts(cfg.run.dir, phase, state, pending, accelerator)
            if log_now:
                record = window_record(phase, state, time.perf_counter() - window_start,
                                       lr=run.optimizer.param_groups[0]["lr"])
                window_start = time.perf_counter()
                log.write(record)
                state.masked_acc = record.get("masked_acc", state.masked_acc)
                bar.set_postfix(loss=f"{record['loss']:.4f}", samples_s=f"{record['samples_per_s']:.0f}")
            if eval_now:
                evaluate_now(phase, run, state)
            if save_now:
                save(phase, run, state)


def finish(cfg: DictConfig, run: PhaseRun, state: RunState, plan: Plan, images: ImageData,
           accelerator: Accelerator, log: MetricsLog) -> dict:
    """Final evaluation, the exported model and, last, summary.json."""
    model = accelerator.unwrap_model(run.model)
    final = plan.final
    val = evaluate(model, images.val, accelerator)
    log.write(eval_record(final.name, state.step, cfg.data.val_split, final.samples, val))
    test = evaluate(model, images.test, accelerator) if images.test is not None else {}
    if test:
        log.write(eval_record(final.name, state.step, cfg.data.test_split, final.samples, test))
    ema = evaluate(run.ema.module, images.val, accelerator) if run.ema is not None else {}
    summary = Summary(
        top1=val["top1"], top5=val["top5"], split=cfg.data.val_split,
        test_top1=test.get("top1"), test_top5=test.get("top5"), ema_top1=ema.get("top1"),
        image_samples=sum(p.samples for p in plan.phases if p.counts_images),
        warmup_samples=sum(p.samples for p in plan.phases if not p.counts_images),
        masked_acc=state.masked_acc, wall_s=sum(state.wall_s.values()), skipped_samples=state.skipped_samples,
        phases={p.name: p.as_dict() | {"wall_s": state.wall_s.get(p.name, 0.0)} for p in plan.phases},
        identity=state.identity,
        environment=environment(str(accelerator.device), accelerator.num_processes),
    )
    run_dir = Path(cfg.run.dir)
    if accelerator.is_main_process:
        log.sync()
        export_run(cfg, model, "model")  # RUN_DIR/model/: a timm hub folder, head included
        write_summary(run_dir, summary)
    accelerator.wait_for_everyone()
    test_line = f", {cfg.data.test_split} top-1 {test['top1']:.2f}%" if test else ""
    accelerator.print(f"vitwarm: done. {cfg.data.val_split} top-1 {val['top1']:.2f}% "
                      f"(top-5 {val['top5']:.2f}%){test_line}; summary in {run_dir / SUMMARY}")
    return asdict(summary)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python -m vitwarm.train",
        description="Procedural warm-up then image training of a timm ViT. Run under `accelerate launch "
                    "[flags] -m vitwarm.train ...` for several processes.",
        epilog="Example: accelerate launch -m vitwarm.train --config recipes/fmnist_demo.yaml "
               "warmup.fraction=0.05 seed=1 run.dir=runs/f05_s1. Packaged recipes (--config NAME): "
               + ", ".join(recipe_names()))
    parser.add_argument("--config", required=True, help="recipe YAML: a path or a packaged name (vitwarm-recipes list)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. warmup.fraction=0.01 procedural.grammar=ww")
    return parser.parse_intermixed_args(argv)  # overrides may come before and after --config


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    run(load_config(args.config, args.overrides))


if __name__ == "__main__":
    sys.exit(main())
