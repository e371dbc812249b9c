"""Every seed vitwarm derives from the run's ``seed``, and the seeding of the global generators.

``derive_seed(seed, purpose, *indices)`` is the one derivation: the run's seed, the purpose's name, the
number of indices and the indices that tell its uses apart go into numpy's ``SeedSequence``, which hashes
them into a 32-bit seed. The count is there because SeedSequence ignores trailing zero words: without it
``(purpose, 1)`` and ``(purpose, 1, 0)`` would give the same seed.
SeedSequence because its output is well mixed (seeds 0 and 1, or steps 5 and 6, give unrelated streams,
which consecutive integers fed straight to a generator do not promise), it is specified by numpy and the
same in every process and on every platform (unlike Python's salted ``hash``), and it takes any number of
words. A string (the purpose, or an index such as a phase name) enters as its CRC-32.

The purposes, with their indices:

| purpose | indices | seeds |
|---|---|---|
| ``warmup-init``, ``image-init`` | (``"mimetic"``) | the ViT's initialisation (and its mimetic init) |
| ``symbols`` | | the warm-up's frozen symbol table |
| ``tokens`` | | the procedural stream's base seed |
| ``token-block`` | block | one block of ``BLOCK_SIZE`` procedural samples, from the stream's base seed |
| ``probe`` | | the warm-up's held-out probe set (vitwarm.procedural.probe), apart from the training stream |
| ``transfer-shuffle`` | | the shuffled-transfer ablation |
| ``grow`` | | growing ``warmup.model`` into the image model: its symmetry-breaking noise (and shuffle ablation) |
| ``warmup``, ``image`` | step, rank | the global generators at each step of that phase (``seed_step``) |
| ``shards`` | epoch | the order of a training epoch's shards |
| ``buffer`` | epoch, rank, worker | a loader worker's shuffle buffer |
| ``pass`` | epoch, rank, worker, pass | a worker's shard order in its second and later passes |
| ``augment`` | epoch, rank, worker, batch | the global generators while one batch is augmented (``seeded``) |
| ``synthetic-class`` | class | the pattern every synthetic image of that class shows (``data.synthetic.seed``) |
| ``synthetic`` | split, sample | one synthetic image's own noise (``data.synthetic.seed``) |

The global generators (Python's ``random``, numpy's legacy global one, torch's, the CUDA ones included) are
what dropout, drop-path, timm's Mixup/CutMix and random erasing on the device (vitwarm.data.transforms.OnDevice)
and timm's transforms in the loader workers draw from: ``seed_step`` seeds them at every training step, ``seeded``
for one block (a batch's augmentation) and restores them afterwards.
"""

from __future__ import annotations

import contextlib
import random
import zlib

import numpy as np
import torch


def derive_seed(seed: int, purpose: str, *indices: int | str) -> int:
    """A 32-bit seed for ``purpose`` (one of the module docstring's) and ``indices``, from the run's ``seed``."""
    words = [seed, zlib.crc32(purpose.encode()), len(indices)]
    words += [zlib.crc32(w.encode()) if isinstance(w, str) else int(w) for w in indices]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def _seed_globals(seed: int, *, cuda: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (timm's RandAugment and Mixup draw from the legacy global generator)
    if cuda:
        torch.manual_seed(seed)  # CPU and every CUDA device
    else:
        torch.default_generator.manual_seed(seed)


def seed_step(seed: int, phase: str, step: int, rank: int) -> None:
    """Seed the global generators for one training step: same seeds, same draws after a resume."""
    _seed_globals(derive_seed(seed, phase, step, rank), cuda=True)


@contextlib.contextmanager
def seeded(seed: int):
    """Seed the global generators (torch's CPU one only) for the block, then restore their states.

    Restoring matters when there are no loader workers and the block runs in the training process; the
    CUDA generators are left alone, so the caller's GPU draws are not shifted.
    """
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    with torch.random.fork_rng(devices=[]):
        _seed_globals(seed, cuda=False)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)  # noqa: NPY002
