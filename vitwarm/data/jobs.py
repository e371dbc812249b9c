"""Running one function over many jobs (shards to write or to check) in worker processes, with a progress bar."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor

from tqdm import tqdm


def run_jobs(fn: Callable, jobs: Sequence, workers: int, desc: str, progress: bool) -> list:
    """Run ``fn`` over ``jobs`` in ``workers`` processes (in-process for workers <= 1), with a progress bar."""
    bar = tqdm(total=len(jobs), desc=desc, unit="shard", disable=not progress)
    try:
        if workers <= 1 or len(jobs) <= 1:
            results = []
            for job in jobs:
                results.append(fn(job))
                bar.update()
            return results
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            results = []
            for r in pool.map(fn, jobs):
                results.append(r)
                bar.update()
            return results
    finally:
        bar.close()
