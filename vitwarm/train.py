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
import math
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
from .config import ConfigError, flatten, load_config
from .data import ensure_fmnist_shards, read_splits
from .errors import ArgumentParser, VitwarmError, one_line_errors
from .export import export_run
from .metrics import MetricsLog
from .phases import PHASE_END, PHASE_SETUP, ImageData, PhaseRun, evaluate
from .preflight import preflight
from .resume import RunState, checkpoint_name, choose_checkpoint, load_checkpoint, read_state, save_checkpoint
from .rundir import (
    CHECKPOINTS,
    SUMMARY,
    Summary,
    changed_keys,
    check_hashes,
    describe_changes,
    eval_record,
    hash_exports,
    identity,
    read_summary,
    write_config,
    write_summary,
)
from .seeds import seed_step
from .trackers import check_trackers


class NonFiniteLoss(VitwarmError):
    """The loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


def train_phase(cfg: DictConfig, phase: Phase, run: PhaseRun, state: RunState, accelerator: Accelerator,
                log: MetricsLog, save, evaluate_now) -> None:
    """Run ``phase`` from ``state.step`` to its end: accumulate, guard, clip, step, log, evaluate, checkpoint.

    A step never reads a device value on the host: its loss and counts accumulate on the device, and a
    non-finite loss skips the update there. ``add_counts`` is the only host sync, once before anything reads
    the model or the state (a log record, an evaluation, a checkpoint); it stops the run on a non-finite loss.
    The phase-end checkpoint is the caller's (after the phase-end action), so no step is saved twice.
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
            log_now = state.step % cfg.log.every_steps == 0 or done
            eval_now = phase.eval_every and state.step % phase.eval_every == 0 and not done
            save_now = state.step % cfg.checkpoint.every_steps == 0 and not done
            if log_now or eval_now or save_now:
                add_counts(cfg, phase, state, pending, accelerator)
            if log_now:
                record = log_window(phase, state, time.perf_counter() - window_start, run)
                window_start = time.perf_counter()
                log.write(record)
                state.masked_acc = record.get("masked_acc", state.masked_acc)
                bar.set_postfix(loss=f"{record['loss']:.4f}", samples_s=f"{record['samples_per_s']:.0f}")
            if eval_now:
                evaluate_now(phase, run, state)
            if save_now:
                save(phase, run, state)


class Pending:
    """This process's sums since the last ``add_counts``, kept on the training device: adding reads nothing back."""

    def __init__(self, device: torch.device):
        # float64: summed in step order, exactly as the Python floats of the window in RunState would be.
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.counts: dict[str, torch.Tensor] = {}  # int64 (): masked / correct tokens
        # The phase's first step with a non-finite loss (-1 while there is none) and that loss.
        self.bad_step = torch.full((), -1, dtype=torch.int64, device=device)
        self.bad_loss = torch.zeros((), dtype=torch.float64, device=device)

    def add_counts(self, counts: dict[str, torch.Tensor]) -> None:
        for name, count in counts.items():
            self.counts[name] = self.counts.get(name, 0) + count.detach()

    def add_loss(self, step: int, step_loss: torch.Tensor) -> torch.Tensor:
        """Adds a step's loss; returns a device bool, True while every step of the phase had a finite loss."""
        self.loss += step_loss.double()
        first = (self.bad_step < 0) & ~torch.isfinite(step_loss)
        self.bad_step = torch.where(first, step, self.bad_step)
        self.bad_loss = torch.where(first, step_loss.double(), self.bad_loss)
        return self.bad_step < 0


@torch.no_grad()
def guarded_step(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], finite: torch.Tensor) -> None:
    """``optimizer.step()`` where the device bool ``finite`` holds, no change to ``params`` where not: no sync.

    Optimizers that take a grad scaler's ``found_inf`` (torch's fused Adam, AdamW, SGD) skip the whole
    update on the device, moments and step count included. For the others the weights are copied before
    the step and selected back; their state may absorb the bad step, but it is never saved: the run stops
    at the next ``add_counts``, before any checkpoint.
    """
    inner = getattr(optimizer, "optimizer", optimizer)  # Accelerate wraps the optimizer
    if getattr(inner, "_step_supports_amp_scaling", False):
        inner.found_inf = (~finite).float()
        optimizer.step()
        return
    before = [p.clone() for p in params]
    optimizer.step()
    for p, old in zip(params, before):
        torch.where(finite, p, old, out=p)


def add_counts(cfg: DictConfig, phase: Phase, state: RunState, pending: Pending, accelerator: Accelerator) -> None:
    """Sum ``pending`` over processes into the (checkpointed) window in ``state`` and zero it; the loop's one sync.

    Raises NonFiniteLoss, naming the first non-finite step, when the window holds one.
    """
    names = list(pending.counts)
    sums = torch.stack([pending.loss] + [pending.counts[name].double() for name in names])  # float64 (1 + counts,)
    loss, *counts = accelerator.reduce(sums, reduction="sum").tolist()  # counts are exact below 2**53
    if not math.isfinite(loss):  # every process sees the same sums, so all of them stop here
        rows = accelerator.gather(torch.stack([pending.bad_step.double(), pending.bad_loss])[None]).tolist()
        step, value = min((row for row in rows if row[0] >= 0), default=(state.step - 1, loss))
        raise NonFiniteLoss(f"{phase.name} loss is {value} at step {int(step)}; stopped without applying it or any "
                            f"later step. The newest checkpoint in {cfg.run.dir}/checkpoints is intact: lower the "
                            "learning rate or enable gradient clipping, then resume.")
    state.window_loss += loss / accelerator.num_processes  # the mean over processes of their sums
    for name, count in zip(names, counts):
        state.window_counts[name] = state.window_counts.get(name, 0) + int(count)
    pending.loss.zero_()
    pending.counts.clear()


def log_window(phase: Phase, state: RunState, seconds: float, run: PhaseRun) -> dict:
    """One metrics record averaged over the steps since the last one; resets the window in ``state``."""
    samples = state.step * phase.global_batch
    record = {"phase": phase.name, "step": state.step, "samples": samples,
              "image_samples": samples if phase.name == "image" else 0,
              "loss": state.window_loss / state.window_steps, "lr": run.optimizer.param_groups[0]["lr"],
              "samples_per_s": state.window_steps * phase.global_batch / max(seconds, 1e-9)}
    counts = state.window_counts
    if "masked" in counts:
        record["masked_acc"] = 100 * counts["correct"] / max(counts["masked"], 1)
    state.window_loss, state.window_steps, state.window_counts = 0.0, 0, {}
    return record


def accelerate_precision(precision: str) -> str:
    """Accelerate's name for a precision: full fp32 is 'no' (mixed precision off)."""
    return "no" if precision == "fp32" else precision


def check_identity(cfg: DictConfig, recorded: dict, source: Path) -> dict[str, list]:
    """The identity keys ``cfg`` changes against the run in ``source``; refused unless deliberately allowed."""
    changes = changed_keys(recorded, identity(cfg))
    allowed = set(cfg.resume_allow_changed)
    unknown = sorted(allowed - recorded.keys())
    if unknown:
        raise ConfigError(f"resume_allow_changed names {', '.join(unknown)}, which "
                          f"{'is' if len(unknown) == 1 else 'are'} not among the keys that identify a run")
    refused = {k: v for k, v in changes.items() if k not in allowed}
    if refused:
        raise ConfigError(f"{source} belongs to a run with other settings: {describe_changes(refused)}. Use the "
                          "same values, another run.dir, or allow the change deliberately with "
                          f"resume_allow_changed=[{','.join(refused)}]")
    return changes


def run(cfg: DictConfig) -> dict:
    """The whole run; returns the summary (also written to RUN_DIR/summary.json)."""
    # Every phase planned and dry-built before shards, run directory or process group exist.
    plan = preflight(cfg, world_size=int(os.environ.get("WORLD_SIZE", "1")))
    run_dir = Path(cfg.run.dir)
    # Several processes but no GPU (torchrun-style launch on a laptop or CI): Accelerate joins them over gloo
    # only when told to use the CPU; otherwise each process would silently train alone.
    cpu_ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    accelerator = Accelerator(cpu=cpu_ddp, mixed_precision=accelerate_precision(cfg.precision),
                              project_dir=str(run_dir), log_with=check_trackers(cfg.log.trackers) or None)
    # What is in the run directory decides what happens, before anything in it is touched.
    summary = read_summary(run_dir)
    checkpoint, warnings = choose_checkpoint(run_dir, cfg.resume)
    for warning in warnings:
        accelerator.print(warning)
    state = read_state(checkpoint) if checkpoint else RunState(model_name=cfg.model.name, identity=identity(cfg))
    changes: dict[str, list] = {}
    if state.model_name != cfg.model.name:
        raise ConfigError(f"checkpoint {checkpoint} is of model {state.model_name}, but model.name="
                          f"{cfg.model.name}; resume with the same model or choose another run.dir")
    if checkpoint or summary:
        changes = check_identity(cfg, state.identity if checkpoint else summary.identity,
                                 checkpoint or run_dir / SUMMARY)
        if summary and not changes:
            accelerator.print(f"vitwarm: {run_dir} is already finished ({summary.split} top-1 {summary.top1:.2f}%); "
                              "nothing to do")
            return asdict(summary)
        state.identity = identity(cfg)
    if accelerator.is_main_process and cfg.data.prepare == "fmnist":
        ensure_fmnist_shards(cfg.data.source, fraction=cfg.data.train_fraction)
    accelerator.wait_for_everyone()
    splits = read_splits(cfg.data)  # before the run directory: refuses evaluation splits that hold training shards
    if accelerator.is_main_process:
        write_config(run_dir, cfg)
    accelerator.wait_for_everyone()

    phases = plan.phases
    images = ImageData.open(cfg, splits, img_size=plan.img_size, micro_batch=phases[-1].micro_batch,
                            rank=accelerator.process_index, world_size=accelerator.num_processes,
                            pin_memory=accelerator.device.type == "cuda")
    log = MetricsLog(run_dir, accelerator)
    # A checkpoint of another run directory (resume=PATH) counted that run's records, not this one's.
    log.restore(state.records if checkpoint is None or checkpoint.parent.resolve() == (run_dir / CHECKPOINTS).resolve()
                else 0)
    if checkpoint and changes:
        log.write({"event": "config_changed", "phase": state.phase, "step": state.step, "changes": changes})
    if cfg.log.trackers:
        accelerator.init_trackers(cfg.log.project, config=flatten(cfg))
    accelerator.print(f"vitwarm: {accelerator.num_processes} process(es) on {accelerator.device}; plan:")
    for phase in phases:
        accelerator.print(f"  {phase.name:7s} {phase.steps} steps x {phase.global_batch} = {phase.samples} "
                          f"samples, ~{phase.flops:.2e} FLOP")
    if checkpoint:
        accelerator.print(f"vitwarm: resuming from {checkpoint} ({state.phase} step {state.step})")

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
            save_checkpoint(run_dir, checkpoint_name(phases.index(phase), phase.name, state.step), state,
                            accelerator.unwrap_model(run.model), run.optimizer, run.ema, cfg.checkpoint.keep)
        accelerator.wait_for_everyone()

    def evaluate_now(phase: Phase, run: PhaseRun, state: RunState) -> None:
        result = evaluate(accelerator.unwrap_model(run.model), images.val, accelerator)
        log.write(eval_record(phase.name, state.step, cfg.data.val_split, state.step * phase.global_batch, result))
        accelerator.print(f"  eval @ step {state.step}: {cfg.data.val_split} top-1 {result['top1']:.2f}%")

    offset = 0
    for index, phase in enumerate(phases):
        log.step_offset[phase.name] = offset
        offset += phase.steps
        last = index == len(phases) - 1
        if phase.name in state.finished and not last:
            # Done, unless the next phase has yet to read this one's export and the export is damaged.
            damaged = state.phase == phase.name and state.exports and check_hashes(run_dir, state.exports)
            if not damaged:
                continue
            accelerator.print(f"vitwarm: warning: {run_dir}: {damaged}; redoing the end of phase {phase.name}")
        resuming = state.phase == phase.name
        run = PHASE_SETUP[phase.name](cfg, phase, accelerator, images, state.step if resuming else 0)
        if resuming:
            load_checkpoint(checkpoint, accelerator.unwrap_model(run.model), run.optimizer, run.ema)
        else:
            state.phase, state.step = phase.name, 0
        train_phase(cfg, phase, run, state, accelerator, log, save, evaluate_now)
        if phase.name not in state.finished:
            state.finished.append(phase.name)
        if phase.name in PHASE_END:
            accelerator.print(PHASE_END[phase.name](cfg, run, accelerator, images, run_dir))
        save(phase, run, state)  # the phase-end checkpoint, marking the phase finished
        if not last:
            del run
            accelerator.free_memory()  # the next phase prepares its own model and optimizer
    summary = finish(cfg, run, state, phases, images, accelerator, log)
    accelerator.end_training()
    return summary


def finish(cfg: DictConfig, run: PhaseRun, state: RunState, phases: list[Phase], images: ImageData,
           accelerator: Accelerator, log: MetricsLog) -> dict:
    """Final evaluation, the exported image model and, last, summary.json."""
    model = accelerator.unwrap_model(run.model)
    image_phase = phases[-1]
    val = evaluate(model, images.val, accelerator)
    log.write(eval_record(image_phase.name, state.step, cfg.data.val_split, image_phase.samples, val))
    test = evaluate(model, images.test, accelerator) if images.test is not None else {}
    if test:
        log.write(eval_record(image_phase.name, state.step, cfg.data.test_split, image_phase.samples, test))
    ema = evaluate(run.ema.module, images.val, accelerator) if run.ema is not None else {}
    warm = next((p for p in phases if p.name == "warmup"), None)
    summary = Summary(
        top1=val["top1"], top5=val["top5"], split=cfg.data.val_split,
        test_top1=test.get("top1"), test_top5=test.get("top5"), ema_top1=ema.get("top1"),
        image_samples=image_phase.samples, warmup_samples=warm.samples if warm else 0,
        masked_acc=state.masked_acc, wall_s=sum(state.wall_s.values()), skipped_samples=state.skipped_samples,
        phases={p.name: p.as_dict() | {"wall_s": state.wall_s.get(p.name, 0.0)} for p in phases},
        identity=state.identity,
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
