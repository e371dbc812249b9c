"""metrics.jsonl and trackers: one JSON object per logged step, evaluation or event, written by the main process.

Trackers (``log.trackers``) are handed to Accelerate by name; Accelerate drops a tracker whose package is
missing with only a warning, so ``check_trackers`` makes that an error before the run starts, naming the
package to install. metrics.jsonl is written whatever the trackers.

Records carry ``phase`` and ``step`` (optimizer steps within the phase). Each checkpoint stores how many
records the file held when it was taken; a resumed run keeps exactly those (dropping what the killed
process wrote after the checkpoint, including a line it was cut off in), so the file reads as if the run
had never stopped.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from accelerate import Accelerator
from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

from ..atomic import atomic_write_text, writing
from ..errors import ConfigError
from .checkpoints import RunState
from .plan import Phase
from .rundir import METRICS, read_records

# Tracker name -> its pip package, where the two differ.
PACKAGES = {"comet_ml": "comet-ml"}


def check_trackers(names: list[str]) -> list[str]:
    """``names`` if Accelerate knows each tracker and its package is installed; else ConfigError naming it."""
    valid = sorted(LOGGER_TYPE_TO_CLASS)
    available = {str(t) for t in get_available_trackers()}
    for name in names:
        if name not in LOGGER_TYPE_TO_CLASS:
            raise ConfigError(f"log.trackers: unknown tracker {name!r}; choose from {valid}")
        if name not in available:
            package = PACKAGES.get(name, name)
            raise ConfigError(f"log.trackers: tracker {name!r} needs the package {package!r}, which is not "
                              f"installed (pip install {package}), or remove it from log.trackers")
    return list(names)


class MetricsLog:
    def __init__(self, run_dir: str | Path, accelerator: Accelerator):
        self.path = Path(run_dir) / METRICS
        self.accelerator = accelerator
        self.count = 0  # records in the file (main process)
        # Steps before each phase, so trackers get one increasing step axis over the whole run.
        self.step_offset: dict[str, int] = {}

    def restore(self, records: int) -> None:
        """Keep the first ``records`` records (what the checkpoint saw); later ones will be written again."""
        if not self.accelerator.is_main_process:
            return
        kept, warnings = read_records(self.path)
        for warning in warnings:
            print(warning, flush=True)
        if len(kept) < records:
            raise ConfigError(f"{self.path} holds {len(kept)} records but the checkpoint was taken after "
                              f"{records}: the log lost records; restore the file or start over in a new run.dir")
        kept = kept[:records]
        text = "".join(json.dumps(r) + "\n" for r in kept)
        if not self.path.exists() or self.path.read_text() != text:
            atomic_write_text(self.path, text)
        self.count = records

    def sync(self) -> None:
        """Make every record written so far durable (before a checkpoint counts them)."""
        if self.accelerator.is_main_process and self.path.exists():
            with writing(self.path), self.path.open("a") as f:
                os.fsync(f.fileno())

    def write(self, record: dict) -> None:
        if not self.accelerator.is_main_process:
            return
        record = {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in record.items()}
        with writing(self.path), self.path.open("a") as f:  # a full disk names the file
            f.write(json.dumps(record) + "\n")
        self.count += 1
        prefix = "/".join(str(record[k]) for k in ("phase", "split") if k in record)  # e.g. image/validation
        scalars = {f"{prefix}/{k}": v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        if self.accelerator.trackers:
            global_step = self.step_offset.get(record["phase"], 0) + record["step"]
            self.accelerator.log(scalars, step=global_step)


def window_record(phase: Phase, state: RunState, seconds: float, lr: float) -> dict:
    """One metrics record averaged over the steps since the last one (``seconds`` of training, the learning
    rate ``lr`` of the last step); resets the window in ``state``."""
    samples = state.step * phase.global_batch
    record = {"phase": phase.name, "step": state.step, "samples": samples,
              "image_samples": samples if phase.counts_images else 0,
              "loss": state.window_loss / state.window_steps, "lr": lr,
              "samples_per_s": state.window_steps * phase.global_batch / max(seconds, 1e-9)}
    counts = state.window_counts
    if "masked" in counts:
        record["masked_acc"] = 100 * counts["correct"] / max(counts["masked"], 1)
    state.window_loss, state.window_steps, state.window_counts = 0.0, 0, {}
    return record
