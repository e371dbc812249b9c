"""vitwarm.seeds: the one seed derivation and the seeding of the global generators."""

from __future__ import annotations

import random

import numpy as np
import torch

from vitwarm.seeds import derive_seed, seed_step, seeded


def draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(()))  # noqa: NPY002


def test_derive_seed_is_fixed_and_tells_purposes_and_indices_apart():
    assert derive_seed(0, "image-init") == derive_seed(0, "image-init")
    seeds = {derive_seed(s, p, *i) for s in (0, 1) for p in ("shards", "buffer", "augment")
             for i in ((), (0,), (1,), (0, 1), (1, 0))}
    assert len(seeds) == 2 * 3 * 5 and all(0 <= s < 2**32 for s in seeds)  # trailing zeros count too
    assert derive_seed(3, "image", 5, 0) != derive_seed(3, "warmup", 5, 0)


def test_seed_step_repeats_the_draws_of_a_step():
    seed_step(7, "image", 12, 0)
    first = draws()
    draws()
    seed_step(7, "image", 12, 0)
    assert draws() == first
    seed_step(7, "image", 13, 0)
    assert draws() != first


def test_seeded_gives_the_same_draws_and_restores_the_callers_generators():
    seed_step(1, "image", 0, 0)
    expected_after = draws()
    seed_step(1, "image", 0, 0)
    with seeded(99):
        inside = draws()
    assert draws() == expected_after  # as if the block had not run
    with seeded(99):
        assert draws() == inside
