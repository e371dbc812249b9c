"""Masked-token prediction on procedural sequences: which positions to hide, and the shuffled control."""

from __future__ import annotations

import numpy as np


def mask_targets(
    tokens: np.ndarray,
    target_mask: np.ndarray,
    ratio: float,
    rng: np.random.Generator,
    mask_id: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Hides a ``ratio`` fraction of each sequence's target positions behind ``mask_id``.

    tokens: int (n, N); target_mask: bool (n, N). Per sequence, round(ratio * #targets) target positions
    are drawn uniformly without replacement, at least one when the sequence has any target.
    Returns (inputs, loss_mask): inputs is ``tokens`` with MASK at the hidden positions; loss_mask is
    True exactly there (the loss is computed only on hidden positions).
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1], got {ratio!r}")
    num_targets = target_mask.sum(axis=1)
    num_masked = np.minimum(np.maximum(np.floor(ratio * num_targets + 0.5), 1), num_targets).astype(np.int64)
    # A random key per position, 2.0 (above every random key) where nothing may be masked; the
    # num_masked smallest keys of a row are masked. Float64 ties have negligible probability.
    keys = np.where(target_mask, rng.random(tokens.shape), 2.0)
    sorted_keys = np.sort(keys, axis=1)
    threshold = sorted_keys[np.arange(len(tokens)), np.maximum(num_masked - 1, 0)]
    threshold = np.where(num_masked > 0, threshold, -1.0)
    loss_mask = keys <= threshold[:, None]
    return np.where(loss_mask, mask_id, tokens), loss_mask


def shuffle_within_sequences(tokens: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The shuffled control: each row's tokens in an independent random order (same multiset, no structure)."""
    return rng.permuted(tokens, axis=1)
