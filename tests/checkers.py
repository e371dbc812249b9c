"""Plain-Python checkers shared by the grammar and stream tests (independent of vitwarm's generators)."""

import numpy as np


def is_dyck_word(sequence, k):
    """Properly nested and balanced: every closer matches the most recent unclosed opener."""
    open_stack = []
    for token in sequence:
        if token < k:
            open_stack.append(token)
        elif not open_stack or open_stack.pop() != token - k:
            return False
    return not open_stack


def close_in_mean(a: np.ndarray, b: np.ndarray, sigmas: float = 5.0) -> bool:
    """Two samples' means agree within ``sigmas`` standard errors of their difference."""
    standard_error = np.sqrt(a.var() / len(a) + b.var() / len(b))
    return abs(a.mean() - b.mean()) <= sigmas * standard_error  # <=: two constant, equal samples agree


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Total-variation distance between the empirical distributions of two non-negative integer samples."""
    top = max(a.max(), b.max()) + 1
    return 0.5 * np.abs(np.bincount(a, minlength=top) / len(a) - np.bincount(b, minlength=top) / len(b)).sum()
