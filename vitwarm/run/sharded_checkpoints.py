"""Sharded checkpoints (``run.parallel=fsdp``): torch.distributed.checkpoint (DCP) inside the run-directory
contract of vitwarm.run.checkpoints.

A sharded checkpoint is a folder ``RUN_DIR/checkpoints/<phase index>-<phase>-<step>/`` holding

- ``__<rank>_0.distcp``   one file per process that saved it: its shards of the model and optimizer state;
- ``.metadata``           DCP's index of those files (which piece of which tensor lies where);
- ``state.json``          written last: the ``RunState`` and the sha256 of every other file, ``.metadata``
                          included (the manifest).

Writing: the main process empties ``.tmp-<name>/``; every process writes its file there (``dcp.save``; its
coordinator writes ``.metadata`` once all have); after a barrier, the main process hashes every file, writes
state.json and commits the folder by one rename (vitwarm.run.checkpoints.commit_checkpoint). A kill before
that rename leaves only a ``.tmp-`` folder, which is never taken for a checkpoint.

Reading: as for single-file checkpoints, a checkpoint counts only when every hash in its state.json
matches (vitwarm.run.checkpoints.verify), so a damaged shard or index is passed over by ``resume=auto`` with
one line naming the file. DCP reshards on load: a checkpoint saved by N processes loads into any number of
processes, each reading the pieces of its own shards; with one process, into the plain model.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch.distributed.checkpoint as dcp
from accelerate import Accelerator
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from ..atomic import fault_point
from ..errors import ConfigError
from .checkpoints import RunState, begin_checkpoint, commit_checkpoint, load_checkpoint, temporary_folder
from .phases import Training

INDEX = ".metadata"  # DCP's own name for its index file


def is_sharded_checkpoint(checkpoint: str | Path) -> bool:
    return (Path(checkpoint) / INDEX).is_file()


def _state(training: Training) -> dict:
    """The model and optimizer state by parameter name, as DTensor shards under FSDP or whole tensors without."""
    model, optimizer = get_state_dict(training.model, training.optimizer)
    return {"model": model, "optimizer": optimizer}


def save_sharded(run_dir: str | Path, name: str, state: RunState, training: Training, keep: int,
                 accelerator: Accelerator) -> Path:
    """Write one sharded checkpoint (every process calls this) and delete all but the newest ``keep``."""
    if accelerator.is_main_process:
        begin_checkpoint(run_dir, name)
    accelerator.wait_for_everyone()  # the empty folder exists before any process writes into it
    dcp.save(_state(training), checkpoint_id=temporary_folder(run_dir, name))
    fault_point("checkpoint:shards")  # every shard and the index written: not yet a checkpoint
    accelerator.wait_for_everyone()
    final = commit_checkpoint(run_dir, name, asdict(state), keep) if accelerator.is_main_process else Path(run_dir)
    accelerator.wait_for_everyone()
    return final


def shards_in(checkpoint: str | Path) -> int:
    """How many processes wrote ``checkpoint``."""
    return len(list(Path(checkpoint).glob("__*_0.distcp")))


def check_loadable(checkpoint: str | Path | None, parallel: str) -> None:
    """Refuse, before anything is built, a single-file checkpoint for a run.parallel=fsdp run: its optimizer state
    is torch's, by parameter position, which sharded parameters cannot take. (A sharded checkpoint loads anywhere.)"""
    if checkpoint and parallel == "fsdp" and not is_sharded_checkpoint(checkpoint):
        raise ConfigError(f"checkpoint {checkpoint} is a single-file checkpoint (saved with run.parallel=ddp); "
                          "resume it with run.parallel=ddp and an accelerate config without FSDP")


def load_any(checkpoint: str | Path, training: Training, accelerator: Accelerator) -> str:
    """Load ``checkpoint`` into ``training``'s model and optimizer in place (every process calls this); returns
    a line for the log. A sharded checkpoint loads into any number of processes, sharded or not; a single-file
    one into a run.parallel=ddp run (see `check_loadable`)."""
    if not is_sharded_checkpoint(checkpoint):
        load_checkpoint(checkpoint, accelerator.unwrap_model(training.model), training.optimizer, training.ema)
        return f"vitwarm: loaded {checkpoint}"
    target = _state(training)
    try:
        dcp.load(target, checkpoint_id=checkpoint)
    except (RuntimeError, ValueError, KeyError) as err:  # another model: names or shapes that do not match
        raise ConfigError(f"checkpoint {checkpoint} does not fit this model: {err}") from None
    set_state_dict(training.model, training.optimizer, model_state_dict=target["model"],
                   optim_state_dict=target["optimizer"])
    return (f"vitwarm: loaded sharded checkpoint {checkpoint}, saved by {shards_in(checkpoint)} process(es), "
            f"into {accelerator.num_processes}")

