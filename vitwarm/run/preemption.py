"""A polite stop: on its stop signal (``run.stop_signal``, SIGTERM by default) or Ctrl-C (SIGINT) a run saves
the step it reached and exits with status 75 (vitwarm.errors.STOPPED); the same command resumes it. A second
Ctrl-C stops at once (exit status 130), leaving the previous checkpoint.

The handler only notes the signal. The loop (vitwarm.run.engine.train_phase) acts on it at a step boundary
where every process agrees to stop, so that all of them save the same step:

- one process needs no agreement: it syncs at the end of its current step and stops there;
- several processes fold their flags into the reduction ``sync_window`` makes anyway (vitwarm.run.step),
  and stop at the first sync after any of them got the signal: the next log record, evaluation or
  checkpoint, at most ``log.every_steps`` steps later. No step gets a host sync of its own: the loop keeps
  its one sync per log window (tests/test_host_syncs.py).

In one process, a signal that comes while the loop waits for its next batches (a stalled shard server, a
blocked mount) ends the wait at once, and the run saves the last finished step.

A stop at a phase's last step lets the phase end as usual; the next phase stops at its first boundary, and
a signal during the final evaluation lets the run finish. The stop writes no record to metrics.jsonl, so
that the resumed run's records are exactly the uninterrupted run's; it prints one line instead.

Every process must get the signal: torch's elastic launcher (``accelerate launch``, ``torchrun``) forwards
SIGTERM, SIGINT, SIGHUP and SIGQUIT to its workers, and waits ``TORCH_ELASTIC_SHUTDOWN_TIMEOUT`` seconds (30 by
default) before it kills them (docs/training.md).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import Stopped
from .checkpoints import checkpoint_name
from .rundir import CHECKPOINTS


class WaitInterrupted(Exception):
    """The stop signal came while the loop waited for data: the run stops at the last finished step."""


class StopRequest:
    """Notes the stop signal, and Ctrl-C (SIGINT), while the run holds them (a ``with`` block); the previous
    handlers come back after.

    Ctrl-C is a person at a terminal: the first is the polite stop, a second one stops at once
    (KeyboardInterrupt, vitwarm.errors.one_line_errors): a save it interrupts is discarded, and the
    previous checkpoint stays the one to resume from.
    """

    def __init__(self, signal_name: str, num_processes: int):
        self.signal_name = signal_name  # after a signal: the one received
        self.signals = {signal.Signals[signal_name], signal.SIGINT}
        self.alone = num_processes == 1
        self.received = False  # set by the handler; read by the loop at step boundaries
        self.waiting = False  # inside waiting_for_data()
        self.previous: dict = {}

    def __enter__(self) -> StopRequest:
        self.previous = {signum: signal.signal(signum, self.note) for signum in self.signals}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def note(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.received:
            raise KeyboardInterrupt
        self.received = True
        self.signal_name = signal.Signals(signum).name
        if self.waiting:
            raise WaitInterrupted

    @contextmanager
    def waiting_for_data(self) -> Iterator[None]:
        """A block that waits for batches: in a lone process a stop signal there ends the wait at once
        (WaitInterrupted), since a stalled source (a hung server, a blocked mount) may never finish the step.
        Several processes agree on their stop at a sync instead (a wait is part of every step): a stalled
        source ends their run through ``data.stall_s``."""
        self.waiting = self.alone
        try:
            yield
        finally:
            self.waiting = False

    @property
    def sync_now(self) -> bool:
        """Whether this step must sync although no record, evaluation or checkpoint is due: a lone process
        that got the signal (with several, only a sync that is due anyway carries the flag)."""
        return self.alone and self.received

    def stopped(self, run_dir: str, phase_index: int, phase_name: str, step: int) -> Stopped:
        """The exception that ends the run after its checkpoint of ``step`` is saved."""
        where = Path(run_dir) / CHECKPOINTS / checkpoint_name(phase_index, phase_name, step)
        return Stopped(f"stopped on {self.signal_name} at {phase_name} step {step}, saved in {where}; "
                       "run the same command to resume")
