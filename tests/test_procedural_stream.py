"""Masking, ProceduralTask batches (slicing independence, mixtures, controls) and TokenStream sharding."""

import itertools

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vitwarm.procedural import ProceduralTask, TokenStream, mask_targets
from vitwarm.procedural.stream import BLOCK_SIZE

from checkers import is_dyck_word

# ---- masking -----------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [0.5, 0.25, 1.0, 0.01])
def test_mask_targets_hides_ratio_of_targets(ratio):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 10, size=(300, 40))
    target_mask = rng.random((300, 40)) < rng.random((300, 1))  # per-row target density from 0 to 1
    target_mask[:5] = False  # rows without targets
    inputs, loss_mask = mask_targets(tokens, target_mask, ratio, rng, mask_id=99)
    num_targets = target_mask.sum(axis=1)
    expected = np.where(num_targets > 0, np.clip(np.floor(ratio * num_targets + 0.5), 1, None), 0)
    assert np.array_equal(loss_mask.sum(axis=1), expected)
    assert not (loss_mask & ~target_mask).any()
    assert np.array_equal(inputs, np.where(loss_mask, 99, tokens))


def test_mask_targets_rejects_bad_ratio():
    tokens = np.zeros((2, 4), dtype=np.int64)
    for ratio in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="mask_ratio"):
            mask_targets(tokens, tokens == 0, ratio, np.random.default_rng(0), 5)


# ---- ProceduralTask ----------------------------------------------------------------------------


def test_task_batch_is_masked_dyck():
    task = ProceduralTask("k_dyck", 64, params={"k": 8})
    assert (task.mask_id, task.vocab_size) == (16, 17)
    batch = task.batch(0, 300, seed=1)
    assert {key: value.dtype for key, value in batch.items()} == {
        "tokens": np.int64, "targets": np.int64, "loss_mask": np.bool_,
    }  # fmt: skip
    assert all(is_dyck_word(sequence, 8) for sequence in batch["targets"].tolist())
    loss_mask = batch["loss_mask"]
    assert np.array_equal(batch["tokens"], np.where(loss_mask, 16, batch["targets"]))
    num_closers = (batch["targets"] >= 8).sum(axis=1)
    assert (batch["targets"][loss_mask] >= 8).all()
    assert np.array_equal(loss_mask.sum(axis=1), np.floor(0.5 * num_closers + 0.5))


def test_task_batch_does_not_depend_on_slicing():
    task = ProceduralTask("k_dyck:1+ww:1", 32, params={"k": 4})
    whole = task.batch(0, 3 * BLOCK_SIZE + 17, seed=3)
    rng = np.random.default_rng(0)
    for _ in range(20):
        start = int(rng.integers(0, 2 * BLOCK_SIZE))
        n = int(rng.integers(1, BLOCK_SIZE + 17))
        # A fresh task has an empty cache, the shared one a cached block from an earlier call.
        for reader in (task, ProceduralTask("k_dyck:1+ww:1", 32, params={"k": 4})):
            part = reader.batch(start, n, seed=3)
            for key in whole:
                assert np.array_equal(part[key], whole[key][start : start + n]), (key, start, n)
    other_seed = task.batch(0, 64, seed=4)
    assert not np.array_equal(other_seed["targets"], whole["targets"][:64])


def test_task_batch_returns_fresh_arrays():
    task = ProceduralTask("k_dyck", 16)
    first = task.batch(0, 8, seed=0)
    first["targets"][:] = -1
    assert (task.batch(0, 8, seed=0)["targets"] >= 0).all()


def test_shuffled_control_keeps_multiset_and_mask_count():
    plain = ProceduralTask("k_dyck", 64, params={"k": 4}).batch(0, 500, seed=2)
    shuffled = ProceduralTask("k_dyck", 64, params={"k": 4}, shuffled=True).batch(0, 500, seed=2)
    assert np.array_equal(np.sort(plain["targets"], axis=1), np.sort(shuffled["targets"], axis=1))
    assert np.array_equal(plain["loss_mask"].sum(axis=1), shuffled["loss_mask"].sum(axis=1))
    nested = sum(is_dyck_word(sequence, 4) for sequence in shuffled["targets"].tolist())
    assert nested < 0.05 * 500


def test_mixture_weights_and_vocab():
    task = ProceduralTask("k_dyck:3+ww:1", 64, params={"k": 64})
    targets = task.batch(0, 8192, seed=0)["targets"]
    is_copy = (targets[:, :32] == targets[:, 32:]).all(axis=1)
    # binomial standard deviation at p=0.25, n=8192 is 0.0048
    assert abs(is_copy.mean() - 0.25) < 0.02
    assert task.mask_id == 128
    assert ProceduralTask("identity+k_dyck", 64).mask_id == 128
    assert ProceduralTask("stack", 64, params={"k": 200}).mask_id == 203


def test_params_go_to_grammars_that_accept_them():
    targets = ProceduralTask("k_dyck+eca", 64, params={"k": 3, "rule": 30}).batch(0, 256, seed=0)["targets"]
    assert targets.max() < 6
    with pytest.raises(ValueError, match="rule"):
        ProceduralTask("k_dyck", 64, params={"rule": 30})


@pytest.mark.parametrize(("kwargs", "argument"), [
    ({"grammar": "k_dyck:0+ww"}, "grammar"),
    ({"grammar": "k_dyck:x"}, "grammar"),
    ({"grammar": "k_dyck+k_dyck"}, "grammar"),
    ({"grammar": "k_dyck+nope"}, "ww"),  # unknown name: the message lists the valid ones
    ({"grammar": "k_dyck", "seq_len": 63}, "seq_len"),
    ({"grammar": "eca+ww", "seq_len": 60, "params": {"width": 7}}, "width"),
    ({"grammar": "k_dyck", "params": {"k": 0}}, "k"),
    ({"grammar": "k_dyck", "mask_ratio": 0.0}, "mask_ratio"),
])  # fmt: skip
def test_task_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        ProceduralTask(**{"seq_len": 64, **kwargs})


def test_task_batch_bad_arguments():
    task = ProceduralTask("k_dyck", 16)
    for kwargs, argument in [({"start": -1}, "start"), ({"n": 0}, "n must"), ({"seed": -1}, "seed")]:
        with pytest.raises(ValueError, match=argument):
            task.batch(**{"start": 0, "n": 4, "seed": 0, **kwargs})


# ---- TokenStream -------------------------------------------------------------------------------

TASK = ProceduralTask("k_dyck", 32, params={"k": 4})


def take(stream, num_micro_batches, num_workers=0):
    loader = DataLoader(stream, batch_size=None, num_workers=num_workers)
    return list(itertools.islice(loader, num_micro_batches))


def stack_key(micro_batches, key):
    return torch.cat([micro_batch[key] for micro_batch in micro_batches]).numpy()


def test_stream_yields_long_and_bool_tensors():
    (micro_batch,) = take(TokenStream(TASK, 8, seed=1), 1)
    assert micro_batch["tokens"].dtype == torch.long and micro_batch["tokens"].shape == (8, 32)
    assert micro_batch["targets"].dtype == torch.long
    assert micro_batch["loss_mask"].dtype == torch.bool
    assert np.array_equal(micro_batch["targets"].numpy(), TASK.batch(0, 8, seed=1)["targets"])


def test_ranks_and_workers_partition_the_single_stream():
    batch_size, steps = 8, 6
    reference = take(TokenStream(TASK, batch_size, seed=1), 2 * steps)  # one rank, same global samples
    per_rank = [
        take(TokenStream(TASK, batch_size, seed=1, rank=rank, world_size=2), steps, num_workers=2)
        for rank in range(2)
    ]
    for key in ("tokens", "targets", "loss_mask"):
        # Step m of the 2-rank run covers reference micro-batches 2m (rank 0) and 2m+1 (rank 1).
        interleaved = [per_rank[rank][step][key] for step in range(steps) for rank in range(2)]
        assert np.array_equal(torch.cat(interleaved).numpy(), stack_key(reference, key))
    # Disjoint and exhaustive: the samples read are exactly global samples [0, 2 * steps * batch_size).
    assert np.array_equal(stack_key(reference, "targets"), TASK.batch(0, 2 * steps * batch_size, seed=1)["targets"])


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # 3 workers on a 2-core machine
def test_worker_count_does_not_change_order():
    single = take(TokenStream(TASK, 4, seed=2), 7)
    workers = take(TokenStream(TASK, 4, seed=2), 7, num_workers=3)
    assert np.array_equal(stack_key(single, "tokens"), stack_key(workers, "tokens"))


@pytest.mark.parametrize("rank", [0, 1])
def test_resume_continues_without_replay(rank):
    batch_size, world_size, consumed_steps = 8, 2, 4
    uninterrupted = take(TokenStream(TASK, batch_size, seed=5, rank=rank, world_size=world_size), 10)
    start_sample = consumed_steps * batch_size * world_size
    resumed = take(
        TokenStream(TASK, batch_size, seed=5, start_sample=start_sample, rank=rank, world_size=world_size), 6
    )
    for key in ("tokens", "targets", "loss_mask"):
        assert np.array_equal(stack_key(resumed, key), stack_key(uninterrupted[consumed_steps:], key))


@pytest.mark.parametrize(("kwargs", "argument"), [
    ({"start_sample": 12}, "start_sample"),
    ({"start_sample": -16}, "start_sample"),
    ({"rank": 2}, "rank"),
    ({"world_size": 0}, "world_size"),
    ({"batch_size": 0}, "batch_size"),
    ({"seed": -1}, "seed"),
])  # fmt: skip
def test_stream_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        TokenStream(TASK, **{"batch_size": 8, "world_size": 2, **kwargs})
