"""``--dry-run``: everything a run does before its first step, and what it would write, writing nothing.

The same checks as a run, in its order: the preflight (the plan and every phase dry-built, vitwarm.run.preflight),
the trackers, what the run directory says (resume, already finished, or a config that does not fit it:
vitwarm.run.checkpoints.where_to_start) and the data (shards found, evaluation splits apart from training).
Where the run would prepare data (``data.prepare`` without its shards yet, vitwarm.data.prepare), it says so
instead. Then
the files the run will leave and the free space where they go. It takes no lock and creates no directory.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from omegaconf import DictConfig

from ..data import pending_preparation, read_splits
from .checkpoints import where_to_start
from .metrics import check_trackers
from .phases.common import build_vit
from .plan import Plan
from .preflight import preflight
from .rundir import CHECKPOINTS, CONFIG, CURVES, METRICS, MODEL_EXPORT, SUMMARY, WARMUP_EXPORT

MB = 2**20


def dry_run(cfg: DictConfig) -> list[str]:
    """The lines ``--dry-run`` prints; raises what a run would raise before its first step."""
    plan = preflight(cfg, world_size=int(os.environ.get("WORLD_SIZE", "1")))
    check_trackers(cfg.log.trackers)
    start = where_to_start(cfg)
    run_dir = Path(cfg.run.dir)
    lines = [f"vitwarm: dry run (nothing written): {cfg.run.dir}", *start.warnings]
    if start.summary:
        return lines + ["  the run is already finished with this config: a run would do nothing"]
    lines += data_lines(cfg.data)
    if start.checkpoint:
        lines.append(f"  resume from {start.checkpoint} ({start.state.phase} step {start.state.step})")
    else:
        lines.append(f"  start at step 1 in {run_dir}{'' if run_dir.exists() else ' (created then)'}; the plan:")
    lines += plan.lines()
    return lines + file_lines(cfg, plan)


def data_lines(data: DictConfig) -> list[str]:
    """What the run would do about its data: prepare it, or the splits it found."""
    if pending := pending_preparation(data):
        return [f"  {pending}"]
    return [f"  {role}: split {info.split!r}, {info.num_samples} samples in {len(info.urls)} shard(s), "
            f"e.g. {info.urls[0]}" for role, info in read_splits(data).items()]


def file_lines(cfg: DictConfig, plan: Plan) -> list[str]:
    """The files the run leaves in its directory, their size in the large, and the free space there."""
    run_dir = Path(cfg.run.dir)
    with torch.device("meta"):  # shapes only
        params = sum(p.numel() for p in build_vit(cfg.model, num_classes=plan.num_classes).parameters())
    weights = 4 * params  # fp32 bytes
    # A checkpoint holds the weights and AdamW's two moments (and the EMA's copy); one more than checkpoint.keep
    # exists while the next is written.
    checkpoint = weights * (3 + (cfg.train.ema_decay > 0))
    exports = [MODEL_EXPORT] + ([WARMUP_EXPORT] if any(p.name == "warmup" for p in plan.phases) else [])
    need = checkpoint * (cfg.checkpoint.keep + 1) + weights * len(exports)
    existing = next(p for p in (run_dir.absolute(), *run_dir.absolute().parents) if p.exists())
    free = shutil.disk_usage(existing).free
    lines = [f"  files: {', '.join(f'{run_dir / e}/' for e in exports)} (timm hub exports, {weights / MB:.1f} MB "
             f"each), {run_dir / CHECKPOINTS}/ (up to {cfg.checkpoint.keep + 1} of ~{checkpoint / MB:.1f} MB), "
             f"{CONFIG}, {METRICS}, {CURVES}, {SUMMARY}",
             f"  space: about {need / MB:.1f} MB needed, {free / MB:,.0f} MB free on the file system of {existing}"]
    if free < need:
        lines.append(f"vitwarm: warning: {existing} has {free / MB:.1f} MB free, less than the {need / MB:.1f} MB "
                     "the run's checkpoints and exports need")
    return lines
