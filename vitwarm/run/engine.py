"""The loop: one run, phase after phase, from the checked plan to summary.json.

The run is a list of phases (vitwarm.run.plan), each set up, checked and ended by its kind
(vitwarm.run.phases.KINDS); ``train_phase`` below is the single loop that runs any of them (its per-step
bookkeeping is vitwarm.run.step). Randomness is re-seeded from (seed, phase, step) at every step, and
every batch source starts at a sample index, so a run resumed from a checkpoint computes exactly what the
uninterrupted run would have.
"""

from __future__ import annotations

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

from ..atomic import check_hashes
from ..data import images_are_synthetic
from ..seeds import seed_step
from .checkpoints import RunState, Start
from .context import Launch, agreed_start, open_data, open_log
from .export import export_run
from .fsdp import resolve, whole
from .images import evaluate
from .lock import hold_run_dir
from .metrics import check_trackers, window_record
from .outcome import headline, outcome_lines
from .phases import KINDS, Training
from .plan import Phase, Plan
from .precision import accelerate_precision, check_launch_precision, use_tf32
from .preemption import StopRequest, WaitInterrupted
from .preflight import preflight
from .probe import probe_summary
from .rundir import (
    MODEL_EXPORT,
    SCHEMA_VERSION,
    Summary,
    environment,
    eval_record,
    space_warning,
    write_summary,
)
from .sharded_checkpoints import check_loadable, load_any
from .step import StepSums, guarded_step, sync_window


def train(cfg: DictConfig) -> dict:
    """The whole run; returns the summary (also written to RUN_DIR/summary.json)."""
    started = time.perf_counter()
    cfg = resolve(cfg)  # the launch's parallel mode (vitwarm.run.fsdp), before Accelerate reads the environment
    # Every phase planned and dry-built before shards, run directory or process group exist.
    plan = preflight(cfg, world_size=int(os.environ.get("WORLD_SIZE", "1")))
    check_launch_precision(cfg.precision)  # the recipe's precision is the run's (vitwarm.run.precision)
    # Several processes but no GPU (torchrun-style launch on a laptop or CI): Accelerate joins them over gloo
    # only when told to use the CPU; otherwise each process would silently train alone.
    cpu_ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    accelerator = Accelerator(cpu=cpu_ddp, mixed_precision=accelerate_precision(cfg.precision),
                              project_dir=cfg.run.dir, log_with=check_trackers(cfg.log.trackers) or None)
    # One writer per run directory, from before the first read of it to the end (vitwarm.run.lock); the stop
    # signal only noted until a step boundary (vitwarm.run.preemption).
    tf32 = use_tf32(cfg.precision, accelerator.device)
    if tf32:
        accelerator.print(tf32)
    with (hold_run_dir(cfg.run.dir, cfg.run.lock, accelerator, (cfg.log.project,) if cfg.log.trackers else ()),
          StopRequest(cfg.run.stop_signal, accelerator.num_processes) as stop):
        return launch_run(cfg, plan, accelerator, stop, started)


def launch_run(cfg: DictConfig, plan: Plan, accelerator: Accelerator, stop: StopRequest, started: float) -> dict:
    """The run from where its directory says it stands, in a run directory this launch holds."""
    start = agreed_start(cfg, accelerator)  # the checkpoints verified once, by the main process
    check_loadable(start.checkpoint, cfg.run.parallel)
    for warning in start.warnings:
        accelerator.print(warning)
    if start.summary:
        accelerator.print(f"vitwarm: {cfg.run.dir} is already finished ({headline(start.summary)}); nothing to do")
        for line in outcome_lines(start.summary, cfg.run.dir)[1:]:
            accelerator.print(line)
        return asdict(start.summary)
    launch = Launch(cfg, plan, accelerator, open_data(cfg, plan, accelerator, start),
                    open_log(cfg, start, accelerator), stop, started)
    accelerator.print(f"vitwarm: {accelerator.num_processes} process(es) on {accelerator.device}; plan:")
    for line in plan.lines():
        accelerator.print(line)
    if low := space_warning(cfg.run.dir, plan.save_bytes):  # a full disk later loses nothing, but the user's time
        accelerator.print(low)
    if start.checkpoint:
        accelerator.print(f"vitwarm: resuming from {start.checkpoint} ({start.state.phase} step {start.state.step})")
    final = run_phases(launch, start)
    summary = finish(launch, final, start.state)
    accelerator.end_training()
    return summary


def run_phases(launch: Launch, start: Start) -> Training:
    """Every phase not yet finished, in order, each ending with its kind's end action and a checkpoint;
    returns the final phase's training (its model is the one evaluated)."""
    cfg, accelerator, state = launch.cfg, launch.accelerator, start.state
    run_dir = Path(cfg.run.dir)
    offset = 0
    for index, planned in enumerate(launch.plan.phases):
        # Sized by what the phases before it used (vitwarm.run.plan.Plan.after): the same on every resume.
        phase = launch.plan.after(state.used_steps, cfg.budget.regime).phases[index]
        if phase != planned:
            used = ", ".join(f"{name} {steps} steps" for name, steps in state.used_steps.items())
            accelerator.print(f"vitwarm: the phases before it used {used}; {phase.name} now {phase.steps} steps x "
                              f"{phase.global_batch} = {phase.samples} samples")
        launch.log.step_offset[phase.name] = offset
        offset += phase.steps
        kind = KINDS[phase.kind]
        if phase.name in state.finished and not phase.final:
            # Done, unless the next phase has yet to read this one's export and the export is damaged.
            damaged = state.phase == phase.name and state.exports and check_hashes(run_dir, state.exports)
            if not damaged:
                continue
            accelerator.print(f"vitwarm: warning: {run_dir}: {damaged}; redoing the end of phase {phase.name}")
        resuming = state.phase == phase.name
        training = kind.setup(cfg, phase, accelerator, launch.images, state.step if resuming else 0)
        if resuming:
            accelerator.print(load_any(start.checkpoint, training, accelerator))
        else:
            state.phase, state.step = phase.name, 0
        train_phase(launch, phase, training, state)
        if training.watch:
            training.watch.finish(whole(training.model, accelerator), state)
        if phase.name not in state.finished:
            state.finished.append(phase.name)
            state.used_steps[phase.name] = state.step
            launch.log.write({"event": "phase_end", "phase": phase.name, "step": state.step} | phase.used(state.step))
        if kind.end:
            accelerator.print(kind.end(cfg, training, accelerator, launch.images))
        launch.save(phase, training, state, wait=True)  # the phase-end checkpoint, marking the phase finished
        if not phase.final:
            del training
            accelerator.free_memory()  # the next phase prepares its own model and optimizer
    return training


def train_phase(launch: Launch, phase: Phase, training: Training, state: RunState) -> None:
    """Run ``phase`` from ``state.step`` to its end: accumulate, guard, clip, step, log, evaluate, checkpoint.

    No step reads a device value on the host; ``sync_window`` (vitwarm.run.step) is the one sync, before a
    log record, an evaluation or a checkpoint. The phase-end checkpoint is the caller's (after the phase's
    end action), so no step is saved twice.
    """
    cfg, accelerator, model = launch.cfg, launch.accelerator, training.model
    # In a terminal the bar redraws in place; in a log file every redraw is a new line, so update rarely.
    # Closed on any exit, so an error message starts on a line of its own.
    with tqdm(total=phase.steps, initial=state.step, desc=phase.name, disable=not accelerator.is_main_process,
              dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30) as bar:
        window_start = time.perf_counter()
        sums = StepSums(accelerator.device)
        trained = [p for p in model.parameters() if p.requires_grad]
        ranks = training.data_ranks or [accelerator.process_index]  # the data ranks this process stands for
        watch = training.watch
        if watch:
            for record in watch.begin(accelerator.unwrap_model(model), state):
                launch.log.write(record)
        # The last step: the planned one, or the warm-up's stop decision once its watch has made it.
        while state.step < (end := watch.end() if watch else phase.steps):
            step = state.step
            step_started = time.perf_counter()
            # Fetch first: starting a DataLoader iterator draws from torch's global generator, which must
            # not shift the draws of this step (a resumed run starts its iterators at another step).
            try:
                with launch.stop.waiting_for_data():
                    micro_batches = [next(training.batches) for _ in range(phase.grad_accum * len(ranks))]
            except WaitInterrupted:  # one process, its data stalled: the last finished step is the one saved
                sync_window(cfg.run.dir, phase, state, sums, launch.new_skipped(), accelerator, stop=True)
                launch.save(phase, training, state)
                raise launch.stop.stopped(cfg.run.dir, launch.plan.phases.index(phase), phase.name, step) from None
            training.scheduler.step_update(step)
            step_loss = torch.zeros((), device=accelerator.device)
            for micro, batch in enumerate(micro_batches):
                if micro % phase.grad_accum == 0:  # each data rank's micro-batches under its own per-step seeds
                    seed_step(cfg.seed, phase.name, step, ranks[micro // phase.grad_accum])
                last = micro == len(micro_batches) - 1
                with nullcontext() if last else accelerator.no_sync(model):  # all-reduce once per step
                    loss, counts = training.loss(model, batch)
                    accelerator.backward(loss / len(micro_batches))
                step_loss += loss.detach() / len(micro_batches)
                sums.add(counts)
            finite = sums.add_loss(step, step_loss)
            if phase.grad_clip > 0:  # on the device: the norm and the clip factor stay tensors
                accelerator.clip_grad_norm_(model.parameters(), phase.grad_clip)
            guarded_step(training.optimizer, trained, finite)
            training.optimizer.zero_grad(set_to_none=True)
            if training.ema is not None:
                training.ema.update(accelerator.unwrap_model(model), step=step)
            state.step = step + 1
            state.wall_s[phase.name] = state.wall_s.get(phase.name, 0.0) + time.perf_counter() - step_started
            state.window_steps += 1
            bar.update(1)

            done = state.step == end
            log_now = state.step % phase.log_every == 0 or done
            eval_now = phase.eval_every and state.step % phase.eval_every == 0 and not done
            save_now = state.step % phase.save_every == 0 and not done
            stop_now = False
            if log_now or eval_now or save_now or launch.stop.sync_now:
                # The one host sync of the window (vitwarm.run.step); it also agrees on a stop request and on a
                # checkpoint.every_minutes save (due at the first sync after they have passed).
                stop_agreed, save_due = sync_window(cfg.run.dir, phase, state, sums, launch.new_skipped(),
                                                    accelerator, stop=launch.stop.received, save_due=launch.save_due())
                # A stop agreed here (vitwarm.run.preemption) saves this step; at a phase's end the phase ends.
                stop_now, save_now = stop_agreed and not done, (save_now or save_due) and not done
            if log_now:
                record = window_record(phase, state, time.perf_counter() - window_start,
                                       lr=training.optimizer.param_groups[0]["lr"])
                window_start = time.perf_counter()
                launch.log.write(record)
                state.masked_acc = record.get("masked_acc", state.masked_acc)
                bar.set_postfix(loss=f"{record['loss']:.4f}", samples_s=f"{record['samples_per_s']:.0f}")
                if watch and watch.due(state.step, phase.log_every, done):  # after the sync: a reduction of its own
                    for record in watch.probe(accelerator.unwrap_model(model), state):
                        launch.log.write(record)
            if eval_now:
                launch.evaluate(phase, training, state)
            if save_now or stop_now:
                launch.save(phase, training, state, wait=stop_now)  # the stop's save is committed before exit 75
            if stop_now:
                raise launch.stop.stopped(cfg.run.dir, launch.plan.position(phase), phase.name, state.step)


def finish(launch: Launch, training: Training, state: RunState) -> dict:
    """Final evaluation, the exported model and, last, summary.json. A warm-up run alone (``warmup.alone``)
    has no image model to evaluate: its result is the export its end action wrote (RUN_DIR/warmup/)."""
    cfg, accelerator, images = launch.cfg, launch.accelerator, launch.images
    plan = launch.plan.after(state.used_steps, cfg.budget.regime)  # as the phases ran
    model = accelerator.unwrap_model(training.model)
    final = plan.final
    used = {p.name: p.used(state.used_steps.get(p.name, p.steps)) for p in plan.phases}
    val = test = ema = {}
    if final.counts_images:
        val = evaluate(model, images.val, accelerator)
        launch.log.write(eval_record(final.name, state.step, cfg.data.val_split, final.samples, val))
        test = evaluate(model, images.test, accelerator) if images.test is not None else {}
        if test:
            launch.log.write(eval_record(final.name, state.step, cfg.data.test_split, final.samples, test))
        ema = evaluate(training.ema.module, images.val, accelerator) if training.ema is not None else {}
    summary = Summary(
        top1=val.get("top1"), top5=val.get("top5"), split=cfg.data.val_split,
        test_top1=test.get("top1"), test_top5=test.get("top5"), ema_top1=ema.get("top1"),
        image_samples=sum(used[p.name]["used_samples"] for p in plan.phases if p.counts_images),
        warmup_samples=sum(used[p.name]["used_samples"] for p in plan.phases if not p.counts_images),
        masked_acc=state.masked_acc, train_s=sum(state.wall_s.values()), wall_s=time.perf_counter() - launch.started,
        skipped_samples=state.skipped_samples,
        phases={p.name: p.as_dict() | used[p.name] | {"train_s": state.wall_s.get(p.name, 0.0)} for p in plan.phases},
        identity=state.identity,
        environment=environment(str(accelerator.device), accelerator.num_processes),
        probe=probe_summary(state, cfg),
        attention=state.attention,
        synthetic_images=images_are_synthetic(cfg.data),
        schema_version=SCHEMA_VERSION,
    )
    run_dir = Path(cfg.run.dir)
    # gathered to the CPU under FSDP (every process takes part); a warm-up alone has no image model to export
    exported = whole(training.model, accelerator) if final.counts_images else None
    if accelerator.is_main_process:
        launch.log.sync()
        if exported is not None:
            export_run(cfg, exported, MODEL_EXPORT)  # RUN_DIR/model/: a timm hub folder, head included
        launch.draw()
        write_summary(run_dir, summary)
    accelerator.wait_for_everyone()
    for line in outcome_lines(summary, run_dir):
        accelerator.print(line)
    return asdict(summary)
