"""The vectorised bracket and copy generators against their per-token references (tests/reference_grammars.py),
in distribution: the same rule must give the same statistics, sequence by sequence. (k_dyck_shuffle_lm: see
tests/test_shuffle_lm.py.)"""

import random

import numpy as np
import pytest

from vitwarm.procedural import get_grammar

from checkers import close_in_mean, histogram_distance, is_dyck_word
from reference_grammars import reference_batch

N, SEQ_LEN = 3000, 64


def bracket_statistics(tokens: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per sequence: the deepest nesting, the first closer's position, the closers among the first half,
    and whether the sequence is properly nested (a stack, not a bag)."""
    depth = np.cumsum(np.where(tokens < k, 1, -1), axis=1)  # (n, seq_len) open brackets after each token
    closers = tokens >= k
    return {"deepest": depth.max(axis=1), "first_closer": closers.argmax(axis=1),
            "early_closers": closers[:, : tokens.shape[1] // 2].sum(axis=1),
            "nested": np.array([is_dyck_word(row, k) for row in tokens.tolist()], dtype=int)}


def both(name: str, **params) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    vectorised = get_grammar(name).sample(np.random.default_rng(0), N, SEQ_LEN, **params)
    return vectorised, reference_batch(name, random.Random(0), N, SEQ_LEN, **params)


@pytest.mark.parametrize("name,params", [("k_dyck", {"k": 4, "p_open": 0.5}), ("k_dyck", {"k": 4, "p_open": 0.7}),
                                         ("k_dyck_shuffle", {"k": 4, "p_open": 0.5})])
def test_brackets_match_their_reference(name, params):
    (tokens, targets), (ref_tokens, ref_targets) = both(name, **params)
    assert np.array_equal(targets, tokens >= params["k"]) and np.array_equal(ref_targets, ref_tokens >= params["k"])
    ours, theirs = bracket_statistics(tokens, params["k"]), bracket_statistics(ref_tokens, params["k"])
    for key in ours:
        assert close_in_mean(ours[key], theirs[key]), (key, ours[key].mean(), theirs[key].mean())
        # Sampling noise at N = 3000 is about 0.03; a p_open off by 0.05 moves "deepest" by about 0.15.
        assert histogram_distance(ours[key], theirs[key]) < 0.08, key


def test_the_statistics_tell_the_rules_apart():
    """The comparison above can fail: k_dyck against the shuffle reference, or another p_open, differ."""
    (tokens, _), _ = both("k_dyck", k=4, p_open=0.5)
    shuffled = bracket_statistics(reference_batch("k_dyck_shuffle", random.Random(0), N, SEQ_LEN, k=4)[0], 4)
    deeper = bracket_statistics(reference_batch("k_dyck", random.Random(0), N, SEQ_LEN, k=4, p_open=0.6)[0], 4)
    ours = bracket_statistics(tokens, 4)
    assert not close_in_mean(ours["nested"], shuffled["nested"])
    assert not close_in_mean(ours["deepest"], deeper["deepest"])


def test_ww_matches_its_reference():
    (tokens, targets), (ref_tokens, ref_targets) = both("ww", k=16)
    assert np.array_equal(targets, ref_targets)
    for rows in (tokens, ref_tokens):
        assert np.array_equal(rows[:, : SEQ_LEN // 2], rows[:, SEQ_LEN // 2 :])
    # Symbols uniform over 0..15 in both: the first halves' histograms agree to sampling noise.
    assert histogram_distance(tokens[:, : SEQ_LEN // 2].ravel(), ref_tokens[:, : SEQ_LEN // 2].ravel()) < 0.02
