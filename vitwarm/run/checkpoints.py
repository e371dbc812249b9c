"""Checkpoints: written so that a kill at any moment loses nothing, verified before they are trusted.

A checkpoint is a folder ``RUN_DIR/checkpoints/<phase index>-<phase>-<step>/`` holding

- ``model.safetensors``      the phase's model (unwrapped from DDP; the file name of timm's hub exports);
- ``optimizer.pt``           the optimizer state, read back with ``torch.load(weights_only=True)``;
- ``ema.safetensors``        the EMA weights, when EMA is on;
- ``state.json``             written last: the ``RunState`` and the sha256 of every other file.

A run with ``run.parallel=fsdp`` writes DCP's files instead of the first three (vitwarm.run.sharded_checkpoints);
the folder, state.json and everything below are the same for both.

Writing: the content is copied to CPU memory at its step (``snapshot``) and written, usually in a background
thread (vitwarm.run.saver); the files go into ``.tmp-<name>/``, which is renamed into place. Re-saving a name
that exists first moves the old copy to ``.old-<name>/`` and deletes it only once the new one is in place, so
some
complete copy exists at every moment (``.old-`` folders count as checkpoints until then). Deleting
renames to ``.del-<name>/`` first, so a half-deleted folder is never taken for a checkpoint.

Starting: ``where_to_start`` reads what the run directory says about a launch (the checkpoint to
continue from, identity changes against the recorded run, or that the run is already finished).

Reading: a checkpoint counts only when its state.json parses and every hash matches; ``resume=auto``
uses the newest one that does and names each one it passes over. Learning-rate schedules are a function
of the step and randomness is re-seeded from (seed, phase, step) every step, so neither needs saving;
data positions follow from the step too (see vitwarm.run.engine).

Accelerate's ``save_state``/``load_state`` is not used because its ``load_state`` unpickles RNG and custom
states with ``weights_only=False``; everything here loads as plain tensors or JSON.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig
from safetensors import SafetensorError
from safetensors.torch import load_model

from ..atomic import (
    atomic_write,
    atomic_write_text,
    check_hashes,
    fault_point,
    file_hash,
    fsync_dir,
    save_torch,
    write_safetensors,
)
from ..errors import ConfigError
from ..models.hub import WEIGHTS
from .rundir import CHECKPOINTS, SUMMARY, Summary, check_identity, identity, read_summary
from .saver import Snapshot

_NAME = re.compile(r"^(?:\.old-)?(\d+-[a-z]+-\d+)$")
STATE = "state.json"
EMA_WEIGHTS = "ema.safetensors"


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
    identity: dict = field(default_factory=dict)
    """The run's identity (vitwarm.run.rundir.identity): a resume with other values is refused."""
    records: int = 0
    """Lines of metrics.jsonl written when the checkpoint was taken: a resume keeps exactly these."""
    window_loss: float = 0.0
    """Sum of the step losses since the last metrics record (the record averages over the window)."""
    window_steps: int = 0
    """Steps since the last metrics record."""
    window_counts: dict[str, int] = field(default_factory=dict)
    """Counts since the last metrics record (masked / correct tokens), summed over processes."""
    skipped_samples: int = 0
    """Training samples skipped as corrupt or unreadable, summed over processes and restarts."""
    exports: dict[str, str] = field(default_factory=dict)
    """sha256 of each export in the run directory when the checkpoint was taken."""
    probe: list[list[float]] = field(default_factory=list)
    """The warm-up's probe so far: [step, probe accuracy (percent)] per evaluation, the first at step 0."""
    stop_step: int | None = None
    """Step at which warmup.stop=plateau decided to stop (its cool-down starts there); None: no decision yet."""
    used_steps: dict[str, int] = field(default_factory=dict)
    """Steps each finished phase actually ran (a stopped warm-up runs fewer than planned)."""
    attention: dict[str, list] = field(default_factory=dict)
    """The warmed-up ViT's attention-structure scores (vitwarm.models.attention_scores), once the warm-up ended."""
    data: dict[str, dict] = field(default_factory=dict)
    """The identity of the data the run trains on (vitwarm.data.identity): a resume on other data is refused."""
    data_workers: int = 0
    """Image-loader workers per process that data.num_workers=auto resolved to (0: not yet); the data order
    depends on it, so a resume keeps it."""
    data_ranks: int = 0
    """Processes the image phase's data order is laid out for: the run's first launch's (0: not yet); a resume
    on a number of processes that divides it makes each process stand for several (vitwarm.run.images)."""


def checkpoint_name(phase_index: int, phase: str, step: int) -> str:
    # Zero-padded so that sorting names sorts checkpoints by (phase, step).
    return f"{phase_index}-{phase}-{step:08d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint folders holding a state.json, oldest first (verified only when read: see `newest_valid`)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found: dict[str, Path] = {}
    # A '.old-' copy stands in for its name only while the new copy is missing: real names come first.
    for path in sorted(root.iterdir(), key=lambda p: p.name.startswith(".old-")):
        match = _NAME.match(path.name)
        if match and (path / STATE).is_file():
            found.setdefault(match.group(1), path)
    return [found[name] for name in sorted(found)]


def _remove(path: Path) -> None:
    """Delete a folder so that no kill leaves a partial one under a checkpoint's name."""
    doomed = path.with_name(f".del-{path.name.removeprefix('.old-')}")
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(path, doomed)
    shutil.rmtree(doomed)


def begin_checkpoint(run_dir: str | Path, name: str) -> Path:
    """An empty ``.tmp-<name>/`` to write checkpoint ``name``'s files into, leftovers of interrupted writes and
    deletions removed. Main process only."""
    root = Path(run_dir) / CHECKPOINTS
    tmp = temporary_folder(run_dir, name)
    for leftover in root.glob(".*"):  # an interrupted write or deletion; a live '.old-' copy stays
        if not (leftover.name.startswith(".old-") and not (root / leftover.name[5:]).exists()):
            shutil.rmtree(leftover)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def temporary_folder(run_dir: str | Path, name: str) -> Path:
    """Where checkpoint ``name`` is written before it is committed."""
    return Path(run_dir) / CHECKPOINTS / f".tmp-{name}"


def commit_checkpoint(run_dir: str | Path, name: str, state: dict, keep: int) -> Path:
    """Hash every file written into ``.tmp-<name>/``, write state.json last, rename the folder into place and
    delete all but the newest ``keep`` checkpoints. Main process only."""
    root = Path(run_dir) / CHECKPOINTS
    final, tmp, old = root / name, temporary_folder(run_dir, name), root / f".old-{name}"
    try:
        hashes = {p.name: file_hash(p) for p in sorted(tmp.iterdir())}
        atomic_write_text(tmp / STATE, json.dumps({"files": hashes} | state, indent=1))
    except BaseException:  # a full disk, a second Ctrl-C: the previous checkpoint stays the newest
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():  # the same step saved again after a resume: keep the old copy until the new one is in
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        fault_point("checkpoint:swap")  # only the old copy (as .old-NAME) and the new one (as .tmp-NAME)
    os.replace(tmp, final)
    fsync_dir(root)
    if old.exists():
        _remove(old)
    for stale in list_checkpoints(run_dir)[:-keep]:
        _remove(stale)
    return final


def save_checkpoint(run_dir: str | Path, name: str, content: Snapshot, keep: int,
                    cancelled: Callable[[], bool] = lambda: False) -> Path:
    """Write one checkpoint (its ``snapshot``) and delete all but the newest ``keep``. Main process only.
    ``cancelled()`` true before the commit (a second Ctrl-C, vitwarm.run.saver): the write is abandoned."""
    tmp = begin_checkpoint(run_dir, name)
    try:
        write_safetensors(tmp / WEIGHTS, content.model)
        atomic_write(tmp / "optimizer.pt", lambda path: save_torch(content.optimizer, path))
        if content.ema is not None:
            write_safetensors(tmp / EMA_WEIGHTS, content.ema)
        fault_point("checkpoint:files")  # every file but state.json written: not yet a checkpoint
        if cancelled():
            raise KeyboardInterrupt
    except BaseException:  # a full disk, a second Ctrl-C: the previous checkpoint stays the newest
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return commit_checkpoint(run_dir, name, content.state, keep)


def read_state(checkpoint: str | Path) -> RunState:
    """The state of a verified checkpoint (see `verify`)."""
    data = json.loads((Path(checkpoint) / STATE).read_text())
    data.pop("files")
    return RunState(**data)


def verify(checkpoint: str | Path) -> str | None:
    """Why ``checkpoint`` cannot be trusted (incomplete, damaged, not vitwarm's), or None when it can."""
    try:
        data = json.loads((Path(checkpoint) / STATE).read_text())
        hashes = data["files"]
        RunState(**{k: v for k, v in data.items() if k != "files"})
    except FileNotFoundError:
        return f"no {STATE} inside (not a complete vitwarm checkpoint)"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{STATE} is unreadable ({type(err).__name__}: {err})"
    return check_hashes(checkpoint, hashes)


def newest_valid(run_dir: str | Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint that verifies, and one warning for each newer one passed over."""
    warnings = []
    for checkpoint in reversed(list_checkpoints(run_dir)):
        reason = verify(checkpoint)
        if reason is None:
            return checkpoint, warnings
        warnings.append(f"vitwarm: warning: skipping checkpoint {checkpoint}: {reason}")
    return None, warnings


def choose_checkpoint(run_dir: str | Path, resume: str) -> tuple[Path | None, list[str]]:
    """The checkpoint to continue from per ``resume`` ('auto', 'never' or a path), and warnings to print."""
    if resume == "never":
        existing = list_checkpoints(run_dir)
        if existing:
            raise ConfigError(f"resume=never but {run_dir} already holds checkpoints ({existing[-1].name}); "
                              "use resume=auto to continue it or choose another run.dir")
        return None, []
    if resume != "auto":
        reason = verify(resume)
        if reason:
            raise ConfigError(f"resume={resume}: refusing to load it: {reason}")
        return Path(resume), []
    checkpoint, warnings = newest_valid(run_dir)
    if checkpoint is None and warnings:
        reasons = "; ".join(w.removeprefix("vitwarm: warning: skipping checkpoint ") for w in warnings)
        raise ConfigError(f"no checkpoint in {run_dir} verifies ({reasons}); move them away or choose another "
                          "run.dir to start over")
    return checkpoint, warnings


def load_checkpoint(checkpoint: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    ema: torch.nn.Module | None) -> None:
    """Load weights and optimizer state in place; a checkpoint of another model fails with the mismatch."""
    checkpoint = Path(checkpoint)
    for module, file in ((model, WEIGHTS), (ema, EMA_WEIGHTS)):
        if module is None:
            continue
        try:
            missing, unexpected = load_model(module, str(checkpoint / file), strict=False)
        except (RuntimeError, SafetensorError) as err:  # shape mismatches
            raise ValueError(f"checkpoint {checkpoint} does not fit this model:\n{err}") from None
        if missing or unexpected:
            raise ValueError(f"checkpoint {checkpoint} does not fit this model: missing keys {missing}, "
                             f"unexpected keys {unexpected}")
    optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", map_location="cpu", weights_only=True))


@dataclass
class Start:
    """What the run directory says about where this launch starts."""

    checkpoint: Path | None
    """The checkpoint to continue from; None: from the first step."""
    state: RunState
    changes: dict[str, list]
    """Identity keys this launch changes, deliberately, against the recorded run ({key: [old, new]})."""
    summary: Summary | None
    """The run's summary when it is already finished with this config: nothing to do."""
    warnings: list[str]
    """One line for each damaged checkpoint passed over."""


def where_to_start(cfg: DictConfig) -> Start:
    """What the run directory ``cfg.run.dir`` says about this launch, read before anything in it is touched."""
    run_dir = Path(cfg.run.dir)
    summary = read_summary(run_dir)
    checkpoint, warnings = choose_checkpoint(run_dir, cfg.resume)
    state = read_state(checkpoint) if checkpoint else RunState(model_name=cfg.model.name, identity=identity(cfg))
    if state.model_name != cfg.model.name:
        raise ConfigError(f"checkpoint {checkpoint} is of model {state.model_name}, but model.name="
                          f"{cfg.model.name}; resume with the same model or choose another run.dir")
    if not (checkpoint or summary):
        return Start(checkpoint, state, {}, None, warnings)
    changes = check_identity(cfg, state.identity if checkpoint else summary.identity, checkpoint or run_dir / SUMMARY)
    state.identity = identity(cfg)
    return Start(checkpoint, state, changes, summary if summary and not changes else None, warnings)
