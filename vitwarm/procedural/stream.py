"""Masked-prediction batches over a grammar mixture, addressed by global sample index, and the token stream.

Sample i of a task is fully determined by (seed, i, task config): samples are generated in blocks of
``BLOCK_SIZE`` consecutive indices, each block from its own generator seeded by (seed, block id) through
``vitwarm.seeds.derive_seed`` (purpose ``token-block``). Any
slicing of the index range therefore yields the same samples, which is what makes rank/worker sharding
and exact resumption possible.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from vitwarm.procedural.masking import mask_targets, shuffle_within_sequences
from vitwarm.procedural.registry import Grammar, check_int, get_grammar
from vitwarm.seeds import derive_seed

# Samples per generated block. A multiple of typical per-rank batch sizes, so a rank (or loader worker)
# that reads one micro-batch generates no samples it throws away; large enough that numpy's per-call
# overhead is amortised. Changing it changes the content of every sample.
BLOCK_SIZE = 256


def parse_mixture(spec: str) -> list[tuple[Grammar, float]]:
    """``"k_dyck:3+ww:1"`` -> [(k_dyck, 0.75), (ww, 0.25)]; a name without ``:weight`` has weight 1."""
    components = []
    for part in spec.split("+"):
        name, _, weight_text = part.strip().partition(":")
        try:
            weight = float(weight_text) if weight_text else 1.0
        except ValueError:
            weight = float("nan")
        if not weight > 0 or not np.isfinite(weight):
            raise ValueError(f"grammar: weight of {name!r} in {spec!r} must be a positive number")
        components.append((get_grammar(name), weight))
    names = [grammar.name for grammar, _ in components]
    if len(set(names)) != len(names):
        raise ValueError(f"grammar: {spec!r} names a grammar twice")
    total = sum(weight for _, weight in components)
    return [(grammar, weight / total) for grammar, weight in components]


class ProceduralTask:
    """A masked-token prediction task over one grammar or a weighted mixture of grammars.

    grammar: a registered name or a mixture ``"name:weight+name:weight"`` (weights are normalised).
    seq_len: tokens per sequence (N = H*W of the ViT grid, e.g. 196).
    params: grammar parameters; each goes to every grammar of the mixture that accepts it.
    mask_ratio: fraction of each sequence's target positions hidden behind MASK.
    shuffled: the structure-free control: tokens permuted inside each sequence before masking (the
        positions to hide are still drawn from the original target positions).

    Ids: every grammar id is below ``mask_id``; ``mask_id`` is the only special id and the last one,
    so ``vocab_size = mask_id + 1``. Grammars of a mixture share the id space.
    """

    def __init__(
        self,
        grammar: str,
        seq_len: int,
        params: dict[str, Any] | None = None,
        mask_ratio: float = 0.5,
        shuffled: bool = False,
    ):
        params = dict(params or {})
        self.spec = grammar
        self.seq_len = check_int("seq_len", seq_len, 1)
        mixture = parse_mixture(grammar)
        self.grammars = [component for component, _ in mixture]
        self.weights = np.array([weight for _, weight in mixture])
        accepted = set().union(*(component.defaults for component in self.grammars))
        unused = sorted(set(params) - accepted)
        if unused:
            raise ValueError(
                f"params {unused} are accepted by no grammar in {grammar!r}; valid params: {sorted(accepted)}"
            )
        self.grammar_params = [
            {key: value for key, value in params.items() if key in component.defaults}
            for component in self.grammars
        ]
        if not 0.0 < mask_ratio <= 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1], got {mask_ratio!r}")
        self.mask_ratio = float(mask_ratio)
        self.shuffled = bool(shuffled)
        # Drawing zero sequences runs every argument check of every grammar now rather than mid-training.
        for component, component_params in zip(self.grammars, self.grammar_params):
            component.sample(np.random.default_rng(0), 0, self.seq_len, **component_params)
        self.mask_id = max(
            component.vocab_size(**component_params)
            for component, component_params in zip(self.grammars, self.grammar_params)
        )
        self._cached_block: tuple[tuple[int, int], dict[str, np.ndarray]] | None = None

    @property
    def vocab_size(self) -> int:
        return self.mask_id + 1

    def __repr__(self) -> str:
        return (
            f"ProceduralTask({self.spec!r}, seq_len={self.seq_len}, params={self.grammar_params}, "
            f"mask_ratio={self.mask_ratio}, shuffled={self.shuffled})"
        )

    def batch(self, start: int, n: int, seed: int, grammar: bool = False) -> dict[str, np.ndarray]:
        """Global samples [start, start + n) as fresh arrays.

        Returns tokens (int64 (n, seq_len): the inputs, MASK at hidden positions), targets (int64
        (n, seq_len): the unmasked sequence) and loss_mask (bool (n, seq_len): the hidden positions); with
        ``grammar``, also grammar (int64 (n,): each sample's index into ``self.grammars``).
        """
        check_int("start", start, 0)
        check_int("n", n, 1)
        check_int("seed", seed, 0)
        pieces = []
        for block_id in range(start // BLOCK_SIZE, (start + n - 1) // BLOCK_SIZE + 1):
            block_start = block_id * BLOCK_SIZE
            lo, hi = max(start, block_start) - block_start, min(start + n, block_start + BLOCK_SIZE) - block_start
            pieces.append({key: value[lo:hi] for key, value in self._block(seed, block_id).items()})
        keys = [key for key in pieces[0] if grammar or key != "grammar"]
        return {key: np.concatenate([piece[key] for piece in pieces]) for key in keys}

    def _block(self, seed: int, block_id: int) -> dict[str, np.ndarray]:
        """Samples [block_id * BLOCK_SIZE, (block_id + 1) * BLOCK_SIZE); the last block is cached."""
        if self._cached_block is not None and self._cached_block[0] == (seed, block_id):
            return self._cached_block[1]
        rng = np.random.default_rng(derive_seed(seed, "token-block", block_id))
        source = rng.choice(len(self.grammars), size=BLOCK_SIZE, p=self.weights)
        targets = np.empty((BLOCK_SIZE, self.seq_len), dtype=np.int64)
        target_mask = np.empty((BLOCK_SIZE, self.seq_len), dtype=bool)
        for index, (component, component_params) in enumerate(zip(self.grammars, self.grammar_params)):
            rows = source == index
            targets[rows], target_mask[rows] = component.sample(
                rng, int(rows.sum()), self.seq_len, **component_params
            )
        if self.shuffled:
            targets = shuffle_within_sequences(targets, rng)
        tokens, loss_mask = mask_targets(targets, target_mask, self.mask_ratio, rng, self.mask_id)
        block = {"tokens": tokens, "targets": targets, "loss_mask": loss_mask, "grammar": source.astype(np.int64)}
        self._cached_block = ((seed, block_id), block)
        return block


class TokenStream(IterableDataset):
    """Infinite stream of masked-prediction micro-batches, sharded over ranks and loader workers.

    Yields dicts of tensors tokens (long (B, N)), targets (long (B, N)), loss_mask (bool (B, N)) with
    B = batch_size per process. Micro-batch m of a rank (counted from start_sample) holds global samples
    start_sample + m*B*world_size + rank*B + [0, B): ranks read disjoint samples, together exhaustive, and
    a run that consumed S global samples resumes without replay from start_sample=S.
    Use with ``DataLoader(stream, batch_size=None, num_workers=W)``: worker w makes the micro-batches
    with m % W == w, and the loader takes them round-robin, so the order is the same for every W.
    """

    def __init__(
        self,
        task: ProceduralTask,
        batch_size: int,
        seed: int = 0,
        start_sample: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        super().__init__()
        self.task = task
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.seed = check_int("seed", seed, 0)
        self.world_size = check_int("world_size", world_size, 1)
        self.rank = check_int("rank", rank, 0, self.world_size - 1)
        self.start_sample = check_int("start_sample", start_sample, 0)
        samples_per_step = self.batch_size * self.world_size
        if self.start_sample % samples_per_step:
            raise ValueError(
                f"start_sample ({start_sample}) must be a multiple of batch_size * world_size "
                f"({samples_per_step}) so that every rank resumes at a micro-batch boundary"
            )

    def first_sample(self, micro_batch: int) -> int:
        """Global index of the first sample of this rank's micro-batch ``micro_batch``."""
        return self.start_sample + (micro_batch * self.world_size + self.rank) * self.batch_size

    def __iter__(self):
        worker = get_worker_info()
        worker_id, num_workers = (0, 1) if worker is None else (worker.id, worker.num_workers)
        for micro_batch in itertools.count(worker_id, num_workers):
            arrays = self.task.batch(self.first_sample(micro_batch), self.batch_size, self.seed)
            yield {key: torch.from_numpy(value) for key, value in arrays.items()}
