"""A polite stop: on its stop signal (``run.stop_signal``, SIGTERM by default) a run saves the step it reached
and exits with status 75 (vitwarm.errors.STOPPED); the same command resumes it.

The handler only notes the signal. The loop (vitwarm.run.engine.train_phase) acts on it at a step boundary
where every process agrees to stop, so that all of them save the same step:

- one process needs no agreement: it syncs at the end of its current step and stops there;
- several processes fold their flags into the reduction ``sync_window`` makes anyway (vitwarm.run.step),
  and stop at the first sync after any of them got the signal: the next log record, evaluation or
  checkpoint, at most ``log.every_steps`` steps later. No step gets a host sync of its own: the loop keeps
  its one sync per log window (tests/test_host_syncs.py).

A stop at a phase's last step lets the phase end as usual; the next phase stops at its first boundary, and
a signal during the final evaluation lets the run finish. The stop writes no record to metrics.jsonl, so
that the resumed run's records are exactly the uninterrupted run's; it prints one line instead.

Every process must get the signal: torch's elastic launcher (``accelerate launch``, ``torchrun``) forwards
SIGTERM, SIGINT, SIGHUP and SIGQUIT to its workers, and waits ``TORCH_ELASTIC_SHUTDOWN_TIMEOUT`` seconds (30 by
default) before it kills them (docs/training.md).
"""

from __future__ import annotations

import signal
from pathlib import Path

from ..errors import Stopped
from .checkpoints import checkpoint_name
from .rundir import CHECKPOINTS


class StopRequest:
    """Notes the stop signal while the run holds it (a ``with`` block); the previous handler comes back after."""

    def __init__(self, signal_name: str, num_processes: int):
        self.signal_name = signal_name
        self.alone = num_processes == 1
        self.received = False  # set by the handler; read by the loop at step boundaries
        self.previous = None

    def __enter__(self) -> StopRequest:
        self.previous = signal.signal(signal.Signals[self.signal_name], self.note)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.Signals[self.signal_name], self.previous)

    def note(self, signum, frame) -> None:
        self.received = True

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
