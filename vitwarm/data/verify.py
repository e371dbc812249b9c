"""``make_shards.py verify``: every shard of a set read and decoded by the loaders' own reader
(vitwarm.data.reader), so a set that verifies is one the loaders read without a fault."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .jobs import run_jobs
from .reader import Faults, decode, read_shard
from .sources import DataError, read_info


def _check_shard(job: tuple[str, int, int | None]) -> list[str]:
    """Read one whole shard and return its problems (empty list when sound). ``job = (path, length, C)``."""
    path, expected, num_classes = job
    problems: list[str] = []
    faults = Faults(strict=False, problems=problems)
    try:
        for sample in read_shard(path, expected, faults):
            decode(sample, num_classes, faults)
    except DataError as err:  # the count differs from _info.json
        problems.append(str(err))
    return problems


def verify_shards(root: str | os.PathLike, splits: Sequence[str] | None = None, *, workers: int = 1,
                  progress: bool = True) -> dict[str, int]:
    """Re-read every shard of ``root`` and check sample counts, labels and image decoding against ``_info.json``.

    Returns ``{split: num_samples}``; raises ValueError listing every problem found.
    """
    root = Path(root)
    info = read_info(root)
    splits = list(info["splits"]) if splits is None else list(splits)
    jobs, problems = [], []
    for s in splits:
        si = info["splits"][s]
        if sum(si["shard_lengths"]) != si["num_samples"]:
            problems.append(f"split {s}: shard_lengths add up to {sum(si['shard_lengths'])}, "
                            f"num_samples says {si['num_samples']}")
        jobs += [(str(root / f), n, info.get("num_classes")) for f, n in zip(si["filenames"], si["shard_lengths"])]
    for p in run_jobs(_check_shard, jobs, workers, "verify", progress):
        problems += p
    if problems:
        raise ValueError(f"{len(problems)} problem(s) in {root}:\n" + "\n".join(problems))
    return {s: info["splits"][s]["num_samples"] for s in splits}
