"""What one launch opens and its phases share: the data, the log, the stop request and the actions the loop
takes between steps (an evaluation, a checkpoint). The loop itself is vitwarm.run.engine."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from omegaconf import DictConfig

from ..config import flatten
from ..data import prepare_data, read_splits
from ..data.identity import data_identity
from ..data.workers import resolve_workers
from .checkpoints import RunState, Start, checkpoint_name, save_checkpoint, where_to_start
from .curves import write_curves
from .images import ImageData, data_layout, evaluate
from .metrics import MetricsLog
from .phases import Training
from .plan import Phase, Plan
from .preemption import StopRequest
from .rundir import CHECKPOINTS, check_data, eval_record, hash_exports, write_config
from .saver import BackgroundSaver, snapshot
from .sharded_checkpoints import save_sharded


@dataclass
class Launch:
    """What the phases of one launch share: the config, the plan, the processes, the data and the log."""

    cfg: DictConfig
    plan: Plan
    accelerator: Accelerator
    images: ImageData
    log: MetricsLog
    stop: StopRequest
    started: float
    """``time.perf_counter()`` when the launch started (before preflight)."""
    skipped_synced: int = 0
    """Of this process's skipped training samples (its train loaders' ``skipped``), those already synced."""
    saver: BackgroundSaver = field(default_factory=BackgroundSaver)
    """The checkpoint write in flight (main process)."""
    export_hashes: dict = field(default_factory=dict)
    """Hashes of the export files hashed so far, with the size and time that identify their content."""
    last_save: float = field(default_factory=time.monotonic)
    """``time.monotonic()`` at this launch's last checkpoint (at its start before the first)."""

    def new_skipped(self) -> int:
        """This process's skipped training samples since the last sync (a host count: no device read)."""
        skipped = sum(loader.skipped for loader in self.images.train)
        new, self.skipped_synced = skipped - self.skipped_synced, skipped
        return new

    def evaluate(self, phase: Phase, training: Training, state: RunState) -> None:
        """Evaluate on the validation split now (an evaluation is a sync of its own) and log it."""
        result = evaluate(self.accelerator.unwrap_model(training.model), self.images.val, self.accelerator)
        split = self.cfg.data.val_split
        self.log.write(eval_record(phase.name, state.step, split, state.step * phase.global_batch, result))
        self.accelerator.print(f"  eval @ step {state.step}: {split} top-1 {result['top1']:.2f}%")
        self.draw()

    def draw(self) -> None:
        """RUN_DIR/curves.png from the records so far (the main process writes them; vitwarm.run.curves)."""
        if self.accelerator.is_main_process:
            write_curves(self.cfg.run.dir, self.cfg.data.val_split, self.cfg.warmup.stop_rise)

    def save(self, phase: Phase, training: Training, state: RunState, wait: bool = False) -> None:
        """A checkpoint of ``state`` (synced just before: every count in it is summed over processes). Under
        run.parallel=fsdp every process writes its shards now (vitwarm.run.sharded_checkpoints); otherwise the
        main process copies the state to CPU memory now and writes it while training goes on
        (vitwarm.run.saver). ``wait``: committed on return."""
        run_dir, name = Path(self.cfg.run.dir), checkpoint_name(self.plan.position(phase), phase.name, state.step)
        if self.accelerator.is_main_process:
            self.log.sync()
            state.records = self.log.count
            state.exports = hash_exports(run_dir, self.export_hashes)  # an unchanged export is not hashed again
        if self.cfg.run.parallel == "fsdp":
            save_sharded(run_dir, name, state, training, self.cfg.checkpoint.keep, self.accelerator)
        elif self.accelerator.is_main_process:
            content = snapshot(state, self.accelerator.unwrap_model(training.model), training.optimizer, training.ema)
            self.saver.submit(lambda: save_checkpoint(run_dir, name, content, self.cfg.checkpoint.keep,
                                                      cancelled=self.saver.cancelled.is_set))
            if wait:
                self.saver.wait()
        self.last_save = time.monotonic()
        self.accelerator.wait_for_everyone()

    def save_due(self) -> bool:
        """Whether ``checkpoint.every_minutes`` (0: off) have passed since this launch's last checkpoint."""
        minutes = self.cfg.checkpoint.every_minutes
        return minutes > 0 and time.monotonic() - self.last_save >= 60 * minutes


def agreed_start(cfg: DictConfig, accelerator: Accelerator) -> Start:
    """Where this launch starts (``where_to_start``), decided by the main process alone, which reads and
    hashes the checkpoints, and sent to the others; what it raises (a refusal: one line) every process raises."""
    start: Start | Exception | None = None
    failed = None
    if accelerator.is_main_process:
        try:
            start = where_to_start(cfg)
        except Exception as err:  # noqa: BLE001 (sent to the other processes, then raised here with its traceback)
            start = failed = err
    [start] = broadcast_object_list([start])
    if failed is not None:
        raise failed
    if isinstance(start, Exception):
        raise start
    return start


def open_data(cfg: DictConfig, plan: Plan, accelerator: Accelerator, start: Start) -> ImageData:
    """Make the data ready (vitwarm.data.prepare), find the splits, check them against the checkpoint's (its
    data identity goes into the next checkpoints), record the config, open the loaders with the workers
    ``data.num_workers`` resolves to (kept in the state for the checkpoints)."""
    if accelerator.is_main_process:
        prepare_data(cfg.data)
    accelerator.wait_for_everyone()
    splits = read_splits(cfg.data)  # before the run directory: refuses evaluation splits that hold training shards
    data = data_identity(splits, content=cfg.data.strict)
    start.changes |= check_data(cfg, start.state.data, data, start.checkpoint)
    start.state.data = data
    if accelerator.is_main_process:
        write_config(cfg.run.dir, cfg)
    accelerator.wait_for_everyone()
    state = start.state
    state.data_workers, warning = resolve_workers(cfg.data.num_workers, len(splits["train"].urls),
                                                  accelerator.num_processes, recorded=state.data_workers)
    if warning:
        accelerator.print(warning)
    state.data_ranks, warning = data_layout(state.data_ranks, accelerator.num_processes)
    if warning:
        accelerator.print(warning)
    return ImageData.open(cfg, splits, img_size=plan.img_size, micro_batch=plan.final.micro_batch,
                          rank=accelerator.process_index, world_size=accelerator.num_processes,
                          num_workers=state.data_workers, device=accelerator.device, data_ranks=state.data_ranks)


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
