"""Checkpoints written while training goes on: one background write at a time.

At a checkpoint step the main process copies the checkpoint's content to CPU memory
(``snapshot``) and hands it to a thread that writes, hashes and commits it by the same
atomic rename as ever (``save_checkpoint``); the step after it starts at once. At most one write is in
flight: the next checkpoint first waits for the one before, so memory holds one copy at most and the
checkpoints commit in step order. A write that fails raises in the training thread at the next checkpoint
or at ``wait``. What needs a checkpoint committed waits for it: the stop's save (exit 75 promises it), a
phase's end (the next phase may resume from it) and the end of the run.

A process killed during a background write loses that write only: its folder is still ``.tmp-<name>``,
never taken for a checkpoint, and a resume picks the newest complete one (tests/test_faults.py).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from ..models import unique_state_dict


def _on_cpu(value):
    """``value`` (a state dict, nested dicts/lists/tuples of tensors and plain values) with every tensor copied
    to CPU memory: what training changes in place afterwards cannot reach the copy."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _on_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_on_cpu(v) for v in value)
    return value


@dataclass
class Snapshot:
    """A checkpoint's content in CPU memory, taken at its step; ``save_checkpoint`` writes it, possibly while
    training goes on (vitwarm.run.saver)."""

    state: dict
    """``asdict(RunState)`` at the step."""
    model: dict[str, torch.Tensor]
    optimizer: dict
    ema: dict[str, torch.Tensor] | None


def snapshot(state, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             ema: torch.nn.Module | None) -> Snapshot:
    """Copy what a checkpoint of this step holds to CPU memory (a shared block's weights once); ``state``: the
    step's vitwarm.run.checkpoints.RunState."""
    return Snapshot(state=json.loads(json.dumps(asdict(state))), model=_on_cpu(unique_state_dict(model)),
                    optimizer=_on_cpu(optimizer.state_dict()), ema=None if ema is None else _on_cpu(ema.state_dict()))


class BackgroundSaver:
    """Runs one write at a time in a thread of its own; ``wait`` joins it and re-raises what it raised.

    A second Ctrl-C while the training thread waits for a write abandons that write (``cancelled``, which the
    write checks before it commits: vitwarm.run.checkpoints.save_checkpoint), so that the previous checkpoint
    stays the newest, as a second Ctrl-C during a save promises (docs/training.md)."""

    def __init__(self):
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()  # set by the write when it ends, however it ends
        self.cancelled = threading.Event()

    def submit(self, write: Callable[[], object]) -> None:
        """Start ``write()`` in the background, after the write in flight (if any) has finished."""
        self.wait()
        self.cancelled.clear()
        self._done.clear()

        def run() -> None:
            try:
                write()
            except BaseException as err:  # handed to the training thread, which raises it
                self._error = err
            finally:
                self._done.set()

        # Not a daemon: a process that ends normally finishes the write in flight first.
        self._thread = threading.Thread(target=run, name="vitwarm-checkpoint")
        self._thread.start()

    def wait(self) -> None:
        """Until no write is in flight; raises the error of a write that failed."""
        if self._thread is not None:
            # An Event, not Thread.join: after a join that Ctrl-C interrupted, a second join returned at once
            # with the write still running (CPython 3.11), and the process ended mid-write, its files left.
            try:
                self._done.wait()
            except KeyboardInterrupt:  # the write gives up before its commit and removes its files
                self.cancelled.set()
                self._done.wait()
                self._thread, self._error = None, None
                raise
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error
