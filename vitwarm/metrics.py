"""metrics.jsonl and trackers: one JSON object per logged step or evaluation, written by the main process.

Records carry ``phase`` and ``step`` (optimizer steps within the phase). When a run resumes from a
checkpoint, records written after that checkpoint by the killed process are dropped first, so the file
reads as if the run had never stopped.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from accelerate import Accelerator


class MetricsLog:
    def __init__(self, run_dir: str | Path, accelerator: Accelerator, phase_order: list[str]):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.accelerator = accelerator
        self.phase_order = phase_order
        # Steps before each phase, so trackers get one increasing step axis over the whole run.
        self.step_offset: dict[str, int] = {}

    def truncate_after(self, phase: str, step: int) -> None:
        """Drop records newer than (phase, step): they will be written again by the resumed run."""
        if not (self.accelerator.is_main_process and self.path.exists()):
            return
        limit = (self.phase_order.index(phase), step) if phase else (-1, 0)
        kept = [line for line in self.path.read_text().splitlines()
                if line and (self.phase_order.index(json.loads(line)["phase"]),
                             json.loads(line)["step"]) <= limit]
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        if not self.accelerator.is_main_process:
            return
        record = {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in record.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        prefix = "/".join(str(record[k]) for k in ("phase", "split") if k in record)  # e.g. image/validation
        scalars = {f"{prefix}/{k}": v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        if self.accelerator.trackers:
            global_step = self.step_offset.get(record["phase"], 0) + record["step"]
            self.accelerator.log(scalars, step=global_step)
