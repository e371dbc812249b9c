"""WW, the copy language: a random string followed by its exact copy."""

from __future__ import annotations

import numpy as np

from vitwarm.procedural.registry import MAX_K, check_even_seq_len, check_int, register_grammar


@register_grammar("ww", vocab_size=lambda k, **_: k)
def ww(rng: np.random.Generator, n: int, seq_len: int, k: int = 128):
    """A random string w of seq_len/2 symbols followed by its exact copy (the copy language ww).

    Ids: 0..k-1, uniform i.i.d. symbols; vocab size k (default 128, the size of the paper's vocabulary).
    Targets: the second half (the copy). seq_len must be even and >= 2.
    """
    check_even_seq_len(seq_len, "ww")
    check_int("k", k, 1, MAX_K)
    half = rng.integers(0, k, size=(n, seq_len // 2))
    tokens = np.concatenate([half, half], axis=1)
    target_mask = np.zeros((n, seq_len), dtype=bool)
    target_mask[:, seq_len // 2 :] = True
    return tokens, target_mask
