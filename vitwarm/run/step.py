"""One optimizer step's bookkeeping, kept on the training device: sums, the non-finite guard, the sync.

A step never reads a device value on the host: its loss and counts accumulate in a ``StepSums`` on the
device, and a non-finite loss skips the update there (``guarded_step``). ``sync_window`` is the only host
sync of the training loop (vitwarm.run.engine.train_phase), once before anything reads the model or the
state (a log record, an evaluation, a checkpoint); it stops the run on a non-finite loss.
"""

from __future__ import annotations

import math

import torch
from accelerate import Accelerator

from ..errors import VitwarmError
from .checkpoints import RunState
from .plan import Phase


class NonFiniteLoss(VitwarmError):
    """The loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


class StepSums:
    """This process's sums since the last ``sync_window``, kept on the training device: adding reads nothing back."""

    def __init__(self, device: torch.device):
        # float64: summed in step order, exactly as the Python floats of the window in RunState would be.
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.counts: dict[str, torch.Tensor] = {}  # int64 (): masked / correct tokens
        # The phase's first step with a non-finite loss (-1 while there is none) and that loss.
        self.bad_step = torch.full((), -1, dtype=torch.int64, device=device)
        self.bad_loss = torch.zeros((), dtype=torch.float64, device=device)

    def add(self, counts: dict[str, torch.Tensor]) -> None:
        """Add one micro-batch's counts (device tensors) to the window's."""
        for name, count in counts.items():
            self.counts[name] = self.counts.get(name, 0) + count.detach()

    def add_loss(self, step: int, step_loss: torch.Tensor) -> torch.Tensor:
        """Adds a step's loss; returns a device bool, True while every step of the phase had a finite loss."""
        self.loss += step_loss.double()
        first = (self.bad_step < 0) & ~torch.isfinite(step_loss)
        self.bad_step = torch.where(first, step, self.bad_step)
        self.bad_loss = torch.where(first, step_loss.double(), self.bad_loss)
        return self.bad_step < 0


@torch.no_grad()
def guarded_step(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], finite: torch.Tensor) -> None:
    """``optimizer.step()`` where the device bool ``finite`` holds, no change to ``params`` where not: no sync.

    Optimizers that take a grad scaler's ``found_inf`` (torch's fused Adam, AdamW, SGD) skip the whole
    update on the device, moments and step count included. For the others the weights are copied before
    the step and selected back; their state may absorb the bad step, but it is never saved: the run stops
    at the next ``sync_window``, before any checkpoint.
    """
    inner = getattr(optimizer, "optimizer", optimizer)  # Accelerate wraps the optimizer
    if getattr(inner, "_step_supports_amp_scaling", False):
        inner.found_inf = (~finite).float()
        optimizer.step()
        return
    before = [p.clone() for p in params]
    optimizer.step()
    for p, old in zip(params, before):
        torch.where(finite, p, old, out=p)


def sync_window(run_dir: str, phase: Phase, state: RunState, sums: StepSums, skipped: int,
                accelerator: Accelerator, stop: bool = False, save_due: bool = False) -> tuple[bool, bool]:
    """Sum ``sums`` over processes into the (checkpointed) window in ``state`` and zero them; the loop's one sync.

    ``skipped``: training samples this process's loader skipped as corrupt since the last sync (a host
    count), summed into ``state.skipped_samples`` by the same reduction; ``stop``: whether this process got
    the stop signal (vitwarm.run.preemption), and ``save_due``: whether this process's clock says a checkpoint is
    due (``checkpoint.every_minutes``), reduced alike. Returns whether any process got the signal and whether
    any says a checkpoint is due: every process decides alike. Raises NonFiniteLoss, naming the first
    non-finite step, when the window holds one.
    """
    names = list(sums.counts)
    # float64 (4 + counts,): the loss sum, the skipped samples, the stop and save flags, the counts; exact below
    # 2**53.
    host = torch.tensor([float(skipped), float(stop), float(save_due)], dtype=torch.float64, device=sums.loss.device)
    local = torch.cat([sums.loss[None], host] + [sums.counts[name].double()[None] for name in names])
    loss, skipped_all, stops, saves, *counts = accelerator.reduce(local, reduction="sum").tolist()
    if not math.isfinite(loss):  # every process sees the same sums, so all of them stop here
        rows = accelerator.gather(torch.stack([sums.bad_step.double(), sums.bad_loss])[None]).tolist()
        step, value = min((row for row in rows if row[0] >= 0), default=(state.step - 1, loss))
        raise NonFiniteLoss(f"{phase.name} loss is {value} at step {int(step)}; stopped without applying it or any "
                            f"later step. The newest checkpoint in {run_dir}/checkpoints is intact: lower the "
                            "learning rate or enable gradient clipping, then resume.")
    state.window_loss += loss / accelerator.num_processes  # the mean over processes of their sums
    state.skipped_samples += int(skipped_all)
    for name, count in zip(names, counts):
        state.window_counts[name] = state.window_counts.get(name, 0) + int(count)
    sums.loss.zero_()
    sums.counts.clear()
    return stops > 0, saves > 0
