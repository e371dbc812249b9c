"""The sample shuffle buffer of the training stream."""

from __future__ import annotations

import random
from collections.abc import Iterator
from itertools import islice

# Raw samples read ahead per worker for shuffling. 2000 ImageNet JPEGs are ~220 MB of bytes per worker.
DEFAULT_SHUFFLE_BUFFER = 2000


def buffer_shuffle(samples: Iterator[dict], size: int, rng: random.Random) -> Iterator[dict]:
    """Fill a buffer of ``size`` samples, then repeatedly emit a random one and refill its slot; at the end,
    emit the buffer's rest in a random order (so every sample comes out exactly once)."""
    buf = list(islice(samples, size))
    for s in samples:
        i = rng.randrange(len(buf))
        yield buf[i]
        buf[i] = s
    rng.shuffle(buf)
    yield from buf
