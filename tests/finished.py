"""``write_finished``: a summary.json exactly as the trainer writes it, for run directories the tests do not train."""

from __future__ import annotations

from pathlib import Path

from vitwarm.rundir import Summary, write_summary

DEFAULTS = dict(top1=50.0, top5=90.0, split="validation", test_top1=None, test_top5=None, ema_top1=None,
                image_samples=1000, warmup_samples=0, masked_acc=None, wall_s=1.0, skipped_samples=0, phases={})


def write_finished(run_dir: Path, identity: dict, **numbers) -> None:
    """Mark ``run_dir`` finished under ``identity`` (vitwarm.rundir.identity), with ``numbers`` in its summary."""
    write_summary(run_dir, Summary(**(DEFAULTS | numbers), identity=identity))
