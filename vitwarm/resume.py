"""Checkpoints: written atomically, found again by ``resume=auto``, loaded without executing pickles.

A checkpoint is a folder ``RUN_DIR/checkpoints/<phase index>-<phase>-<step>/`` holding

- ``model.safetensors``      the phase's model (unwrapped from DDP);
- ``optimizer.pt``           the optimizer state, read back with ``torch.load(weights_only=True)``;
- ``ema.safetensors``        the EMA weights, when EMA is on;
- ``state.json``             the ``RunState``: phase, step, finished phases, wall time.

It is written under a temporary name and renamed into place, so a run killed mid-write leaves either the
old set of checkpoints or the new one, never a half-written one. Learning-rate schedules are a function of
the step and randomness is re-seeded from (seed, phase, step) every step, so neither needs saving; data
positions follow from the step too (see vitwarm.train).

Accelerate's ``save_state``/``load_state`` is not used because its ``load_state`` unpickles RNG and custom
states with ``weights_only=False``; everything here loads as plain tensors or JSON.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

CHECKPOINTS = "checkpoints"
_NAME = re.compile(r"^(\d+)-([a-z]+)-(\d+)$")


@dataclass
class RunState:
    """Where a run stands; everything else about its position is derived from it."""

    phase: str = ""
    """Phase the step counts refer to ('' before the first step)."""
    step: int = 0
    """Optimizer steps completed in ``phase``."""
    finished: list[str] = field(default_factory=list)
    """Phases completed, in order."""
    wall_s: dict[str, float] = field(default_factory=dict)
    """Training wall time per phase, summed over restarts (seconds)."""
    masked_acc: float | None = None
    """Masked-token accuracy at the end of the warm-up (percent)."""
    model_name: str = ""
    """timm name of the model, checked on resume."""


def checkpoint_name(phase_index: int, phase: str, step: int) -> str:
    # Zero-padded so that sorting names sorts checkpoints by (phase, step).
    return f"{phase_index}-{phase}-{step:08d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary folders of an interrupted write are ignored)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: p.name)


def save_checkpoint(run_dir: str | Path, name: str, state: RunState, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, ema: torch.nn.Module | None, keep: int) -> Path:
    """Write one checkpoint atomically and delete all but the newest ``keep``. Main process only."""
    root = Path(run_dir) / CHECKPOINTS
    final, tmp = root / name, root / f".tmp-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    if ema is not None:
        save_model(ema, str(tmp / "ema.safetensors"))
    (tmp / "state.json").write_text(json.dumps(asdict(state), indent=1))
    if final.exists():  # the same step saved again after a resume: identical content
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old)
    return final


def read_state(checkpoint: str | Path) -> RunState:
    path = Path(checkpoint) / "state.json"
    if not path.is_file():
        raise FileNotFoundError(f"{checkpoint} is not a vitwarm checkpoint (no state.json inside)")
    return RunState(**json.loads(path.read_text()))


def load_checkpoint(checkpoint: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    ema: torch.nn.Module | None) -> None:
    """Load weights and optimizer state in place; a checkpoint of another model fails with the mismatch."""
    checkpoint = Path(checkpoint)
    for module, file in ((model, "model.safetensors"), (ema, "ema.safetensors")):
        if module is None:
            continue
        try:
            missing, unexpected = load_model(module, str(checkpoint / file), strict=False)
        except RuntimeError as err:  # shape mismatches
            raise ValueError(f"checkpoint {checkpoint} does not fit this model:\n{err}") from None
        if missing or unexpected:
            raise ValueError(f"checkpoint {checkpoint} does not fit this model: missing keys {missing}, "
                             f"unexpected keys {unexpected}")
    optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", map_location="cpu", weights_only=True))
