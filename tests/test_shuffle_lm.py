"""The LM variant of k-Dyck shuffle against an independent per-token reference, in distribution."""

import random

import numpy as np
import pytest

from vitwarm.procedural import generate, get_grammar

from checkers import close_in_mean, histogram_distance
from reference_grammars import reference_k_dyck_shuffle_lm

N, SEQ_LEN, K, CAP = 4000, 128, 4, 16


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
    reference = statistics([reference_k_dyck_shuffle_lm(rng, SEQ_LEN, k=K, max_depth=CAP)[0] for _ in range(N)], K)
    return vectorised, reference


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
