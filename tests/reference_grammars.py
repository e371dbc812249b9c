"""Per-token pure-Python references of the bracket and copy grammars, written from each grammar's rule alone.

One sequence at a time, one token at a time, Python's ``random``: the readable statement of what the
vectorised generators in ``vitwarm.procedural.grammars`` compute. The tests check the generators against
them in distribution (tests/test_reference_grammars.py, tests/test_shuffle_lm.py) and the benchmark times
them as its baseline (benchmarks/generators.py). Each returns (tokens, is_target) lists of length seq_len;
ids as the grammars use them: openers 0..k-1, the closer of type i is i + k.
"""

from __future__ import annotations

import random

import numpy as np


def reference_k_dyck(rng: random.Random, seq_len: int, k: int = 64, p_open: float = 0.5):
    """Open at depth 0; close when the depth equals the positions left; else open with probability p_open.
    A closer closes the most recent open bracket."""
    tokens, targets, open_stack = [], [], []
    for t in range(seq_len):
        depth = len(open_stack)
        if depth == 0 or (depth < seq_len - t and rng.random() < p_open):
            opener = rng.randrange(k)
            open_stack.append(opener)
            tokens.append(opener)
            targets.append(False)
        else:
            tokens.append(open_stack.pop() + k)
            targets.append(True)
    return tokens, targets


def reference_k_dyck_shuffle(rng: random.Random, seq_len: int, k: int = 64, p_open: float = 0.5):
    """As k_dyck, but a closer closes a uniformly chosen open bracket (any age), so types cross."""
    tokens, targets, open_bag = [], [], []
    for t in range(seq_len):
        depth = len(open_bag)
        if depth == 0 or (depth < seq_len - t and rng.random() < p_open):
            opener = rng.randrange(k)
            open_bag.append(opener)
            tokens.append(opener)
            targets.append(False)
        else:
            index = rng.randrange(depth)
            open_bag[index], open_bag[-1] = open_bag[-1], open_bag[index]
            tokens.append(open_bag.pop() + k)
            targets.append(True)
    return tokens, targets


def reference_k_dyck_shuffle_lm(rng: random.Random, seq_len: int, k: int = 64, p_open: float = 0.5,
                                max_depth: int = 16):
    """The companion LM work's rule: at depth 0 open a uniform type; at depth >= max_depth close; otherwise
    open with probability p_open, else close a type drawn uniformly among the open *types* (whatever their
    counts). Nothing is closed at the end."""
    tokens, targets, counts, open_types, depth = [], [], [0] * k, [], 0
    for _ in range(seq_len):
        if depth == 0 or (depth < max_depth and rng.random() < p_open):
            depth += 1
            opener = rng.randrange(k)
            if not counts[opener]:
                open_types.append(opener)
            counts[opener] += 1
            tokens.append(opener)
            targets.append(False)
        else:
            depth -= 1
            index = rng.randrange(len(open_types))
            kind = open_types[index]
            counts[kind] -= 1
            if not counts[kind]:
                open_types[index] = open_types[-1]
                open_types.pop()
            tokens.append(kind + k)
            targets.append(True)
    return tokens, targets


def reference_ww(rng: random.Random, seq_len: int, k: int = 128):
    """seq_len/2 uniform symbols, then the same again; the copy is the target."""
    half = [rng.randrange(k) for _ in range(seq_len // 2)]
    return half + half, [False] * len(half) + [True] * len(half)


REFERENCES = {
    "k_dyck": reference_k_dyck,
    "k_dyck_shuffle": reference_k_dyck_shuffle,
    "k_dyck_shuffle_lm": reference_k_dyck_shuffle_lm,
    "ww": reference_ww,
}


def reference_batch(name: str, rng: random.Random, n: int, seq_len: int, **params):
    """n reference sequences as the vectorised generators return them: int64 tokens and a bool target mask,
    both (n, seq_len)."""
    tokens, targets = zip(*(REFERENCES[name](rng, seq_len, **params) for _ in range(n)))
    return np.array(tokens, dtype=np.int64), np.array(targets, dtype=bool)
