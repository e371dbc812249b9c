"""The warm-up's probe: a fixed held-out set of masked sequences, and how a model's outputs on it are scored.

The set is samples [0, size) of the run's task under a seed of its own (``vitwarm.seeds`` purpose
``probe``), so it never overlaps the training stream (seed ``tokens``) and is rebuilt identically by a
resumed run. Each process scores a contiguous share; the shares' counts are summed over processes before
``probe_metrics`` turns them into percentages, so the result does not depend on the number of processes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vitwarm.procedural.stream import ProceduralTask

# Columns of the per-grammar counts: correct masked tokens, masked tokens, summed cross-entropy (nats).
CORRECT, MASKED, LOSS = range(3)


def probe_share(task: ProceduralTask, size: int, seed: int, rank: int, world_size: int) -> dict[str, np.ndarray]:
    """Process ``rank``'s share of the probe set: samples [rank·size/W, (rank+1)·size/W) (``task.batch`` arrays
    with ``grammar``); needs size >= world_size, so that no share is empty."""
    if not 0 < world_size <= size:
        raise ValueError(f"a probe set of {size} sequences cannot be split over {world_size} processes")
    lo, hi = rank * size // world_size, (rank + 1) * size // world_size
    return task.batch(lo, hi - lo, seed, grammar=True)


def probe_counts(logits: torch.Tensor, targets: torch.Tensor, loss_mask: torch.Tensor, grammar: torch.Tensor,
                 num_grammars: int) -> torch.Tensor:
    """Per-grammar counts of one batch: float64 (num_grammars, 3), columns CORRECT, MASKED, LOSS.

    logits (B, N, V), targets (B, N) int64, loss_mask (B, N) bool, grammar (B,) int64. Sums, not means, so
    batches and processes add up exactly.
    """
    mask = loss_mask.double()  # (B, N)
    nll = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none").double()  # (B, N)
    per_sample = torch.stack([((logits.argmax(-1) == targets).double() * mask).sum(1), mask.sum(1),
                              (nll * mask).sum(1)], dim=1)  # (B, 3)
    return torch.zeros(num_grammars, 3, dtype=torch.float64, device=logits.device).index_add_(0, grammar, per_sample)


def probe_metrics(counts: list[list[float]], names: list[str]) -> dict[str, float]:
    """``probe_acc`` (percent of masked tokens right) and ``probe_loss`` (mean cross-entropy per masked token)
    over all grammars, and per grammar when there are several (``probe_acc/NAME``, ``probe_loss/NAME``)."""
    def metrics(rows: list[list[float]], suffix: str = "") -> dict[str, float]:
        correct, masked, loss = (sum(row[col] for row in rows) for col in (CORRECT, MASKED, LOSS))
        masked = max(masked, 1.0)
        return {f"probe_acc{suffix}": 100 * correct / masked, f"probe_loss{suffix}": loss / masked}

    result = metrics(counts)
    if len(names) > 1:
        for name, row in zip(names, counts):
            result |= metrics([row], f"/{name}")
    return result
