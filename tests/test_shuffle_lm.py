"""The LM variant of k-Dyck shuffle against an independent per-token reference, in distribution."""

import random

import numpy as np
import pytest

from vitwarm.procedural import generate, get_grammar

N, SEQ_LEN, K, CAP = 4000, 128, 4, 16


def reference_lm_shuffle(rng: random.Random, seq_len: int, k: int, max_depth: int, p_open: float = 0.5):
    """The companion LM work's rule, token by token: at depth 0 open a uniform type; at depth >= max_depth
    close; otherwise open with probability p_open, else close a type drawn uniformly among the open types.
    Nothing is closed at the end."""
    counts, depth, sequence = [0] * k, 0, []
    for _ in range(seq_len):
        if depth == 0 or (depth < max_depth and rng.random() < p_open):
            kind = rng.randrange(k)
            counts[kind] += 1
            depth += 1
            sequence.append(kind)
        else:
            kind = rng.choice([i for i in range(k) if counts[i]])
            counts[kind] -= 1
            depth -= 1
            sequence.append(kind + k)
    return sequence


def statistics(sequences, k):
    """Per sequence: open brackets at the end, deepest point, closer count; and, over all closing steps
    where exactly two types are open with counts 2 and 1, whether the closer took the single one."""
    ends, deepest, closers, took_single = [], [], [], []
    for sequence in sequences:
        counts, depth, top = [0] * k, 0, 0
        for token in sequence:
            if token < k:
                counts[token] += 1
                depth += 1
                top = max(top, depth)
                continue
            open_counts = sorted(c for c in counts if c)
            if open_counts == [1, 2]:
                took_single.append(counts[token - k] == 1)
            counts[token - k] -= 1
            assert counts[token - k] >= 0, "closed a type that was not open"
            depth -= 1
        ends.append(depth)
        deepest.append(top)
        closers.append(sum(token >= k for token in sequence))
    return {"ends": np.array(ends), "deepest": np.array(deepest), "closers": np.array(closers),
            "took_single": np.array(took_single, dtype=float)}


@pytest.fixture(scope="module")
def both():
    vectorised = statistics(generate("k_dyck_shuffle_lm", N, SEQ_LEN, seed=0, k=K).tolist(), K)
    rng = random.Random(0)
    reference = statistics([reference_lm_shuffle(rng, SEQ_LEN, K, CAP) for _ in range(N)], K)
    return vectorised, reference


def close_in_mean(a: np.ndarray, b: np.ndarray, sigmas: float = 5.0) -> bool:
    standard_error = np.sqrt(a.var() / len(a) + b.var() / len(b))
    return abs(a.mean() - b.mean()) < sigmas * standard_error


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Total-variation distance between the empirical distributions of two integer samples."""
    top = max(a.max(), b.max()) + 1
    return 0.5 * np.abs(np.bincount(a, minlength=top) / len(a) - np.bincount(b, minlength=top) / len(b)).sum()


@pytest.mark.parametrize("name", ["ends", "deepest", "closers"])
def test_depth_and_ends_match_the_reference(both, name):
    vectorised, reference = both
    assert close_in_mean(vectorised[name], reference[name]), (vectorised[name].mean(), reference[name].mean())
    # Measured: 0.02 for each (sampling noise); closing everything at the end would put "ends" near 0.9.
    assert histogram_distance(vectorised[name], reference[name]) < 0.08


def test_cap_and_open_ends_are_exercised(both):
    vectorised, _ = both
    assert vectorised["deepest"].max() == CAP  # the cap is reached, never passed
    assert (vectorised["ends"] > 0).mean() > 0.8  # most sequences end with brackets still open


def test_the_type_to_close_is_uniform_among_open_types(both):
    """Open counts {2, 1}: a uniform open *type* takes the single one half the time, a uniform open bracket
    a third of the time; the vectorised generator and the reference agree on 1/2."""
    vectorised, reference = both
    for took in (vectorised["took_single"], reference["took_single"]):
        assert len(took) > 3000
        assert abs(took.mean() - 0.5) < 5 * np.sqrt(0.25 / len(took)), took.mean()
    by_bracket = statistics(generate("k_dyck_shuffle", N, SEQ_LEN, seed=0, k=K, max_depth=CAP, close_at_end=False)
                            .tolist(), K)["took_single"]
    assert abs(by_bracket.mean() - 1 / 3) < 5 * np.sqrt(2 / 9 / len(by_bracket)), by_bracket.mean()


def test_lm_preset_is_the_parameterised_grammar():
    preset = generate("k_dyck_shuffle_lm", 300, 63, seed=4, k=8)  # any length: nothing is closed at the end
    same = generate("k_dyck_shuffle", 300, 63, seed=4, k=8, max_depth=16, close_at_end=False, close_choice="type")
    assert np.array_equal(preset, same)
    tokens, targets = get_grammar("k_dyck_shuffle_lm").sample(np.random.default_rng(0), 10, 63, k=8)
    assert np.array_equal(targets, tokens >= 8)  # the loss goes to the sampled closer


@pytest.mark.parametrize("close_choice", ["bracket", "type"])
def test_close_at_end_balances_every_type(close_choice):
    for sequence in generate("k_dyck_shuffle", 1000, 64, seed=1, k=3, max_depth=6, close_choice=close_choice).tolist():
        counts = [0] * 3
        for token in sequence:
            counts[token % 3] += 1 if token < 3 else -1
            assert min(counts) >= 0
        assert counts == [0, 0, 0]


@pytest.mark.parametrize(("params", "argument"), [
    ({"close_choice": "oldest"}, "close_choice"),
    ({"close_at_end": "no"}, "close_at_end"),
    ({"close_at_end": True}, "seq_len"),  # 63 is odd: cannot close every bracket
])  # fmt: skip
def test_bad_variant_arguments(params, argument):
    with pytest.raises(ValueError, match=argument):
        generate("k_dyck_shuffle", 4, 63, **params)
