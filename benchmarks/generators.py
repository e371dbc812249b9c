"""Generator throughput: vectorised numpy grammars against a per-token pure-Python reference, on one core.

    python benchmarks/generators.py [--seq-len 196] [--n 16384] [--reference-n 1000] [--repeats 5]

For each grammar, prints tokens/s of ``vitwarm.procedural`` (n sequences per call) beside a
straightforward reference (tests/reference_grammars.py: one sequence at a time, one token at a time,
``random``; it returns what the generators return: int64 tokens and a bool target mask), and their ratio.
Targets: at least 20x the reference for k_dyck, k_dyck_shuffle, k_dyck_shuffle_lm and ww, and k_dyck at
least 10 million tokens/s. A last row times the masked training stream (``ProceduralTask.batch``, micro-batches
of 256), i.e. what one data-loader worker delivers.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vitwarm.procedural import ProceduralTask, get_grammar

K = 64
P_OPEN = 0.5
TARGET_RATIO = 20.0
TARGET_K_DYCK_TOKENS_PER_S = 10e6


# The per-token references live beside the tests, which use them as independent checkers.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_grammars import reference_batch  # noqa: E402

# Parameters of each timed grammar, the same for vitwarm's generator and its reference.
PARAMS = {
    "k_dyck": {"k": K, "p_open": P_OPEN},
    "k_dyck_shuffle": {"k": K, "p_open": P_OPEN},
    "k_dyck_shuffle_lm": {"k": K, "p_open": P_OPEN},
    "ww": {"k": 2 * K},
}


# ---- timing ------------------------------------------------------------------------------------


def best_seconds(runs: list, repeats: int) -> list[float]:
    """Fastest of ``repeats`` timed calls of each run (after one warm-up call each), in seconds.

    Time is this process's CPU time, so other processes competing for the cores do not count; the runs
    are timed in turns, so cache pressure from them hits all runs alike, and the minimum is the least
    disturbed measurement.
    """
    best = [float("inf")] * len(runs)
    for run in runs:
        run()
    for _ in range(repeats):
        for index, run in enumerate(runs):
            start = time.process_time()
            run()
            best[index] = min(best[index], time.process_time() - start)
    return best


def compare(name: str, n: int, reference_n: int, seq_len: int, repeats: int) -> tuple[float, float]:
    """(vitwarm, reference) tokens/s for grammar ``name``."""
    params = PARAMS[name]
    grammar = get_grammar(name)
    rng, reference_rng = np.random.default_rng(0), random.Random(0)
    fast, slow = best_seconds(
        [
            lambda: grammar.sample(rng, n, seq_len, **params),
            lambda: reference_batch(name, reference_rng, reference_n, seq_len, **params),
        ],
        repeats,
    )
    return n * seq_len / fast, reference_n * seq_len / slow


def stream_tokens_per_s(seq_len: int, repeats: int, micro_batches: int = 32, batch_size: int = 256) -> float:
    task = ProceduralTask("k_dyck", seq_len, params={"k": K})
    # Fresh sample ranges on every repeat so the block cache never answers.
    offsets = iter(range(0, 10**9, micro_batches * batch_size))

    def read() -> None:
        first = next(offsets)
        for m in range(micro_batches):
            task.batch(first + m * batch_size, batch_size, seed=0)

    (seconds,) = best_seconds([read], repeats)
    return micro_batches * batch_size * seq_len / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-len", type=int, default=196, help="tokens per sequence (default 196)")
    parser.add_argument("--n", type=int, default=16384, help="sequences per vectorised call (default 16384)")
    parser.add_argument("--reference-n", type=int, default=1000, help="sequences per reference call")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats; the best is reported")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the generators are single-threaded numpy; keep torch from adding threads

    print(f"seq_len={args.seq_len}, vectorised n={args.n}, reference n={args.reference_n}, "
          f"best of {args.repeats}, one thread")  # fmt: skip
    header = f"{'grammar':<19}{'vitwarm tok/s':>15}{'python tok/s':>15}{'ratio':>9}  targets"
    print(header + "\n" + "-" * len(header))
    for name in PARAMS:
        fast, slow = compare(name, args.n, args.reference_n, args.seq_len, args.repeats)
        met = fast / slow >= TARGET_RATIO and (name != "k_dyck" or fast >= TARGET_K_DYCK_TOKENS_PER_S)
        print(f"{name:<19}{fast:>15.3e}{slow:>15.3e}{fast / slow:>8.1f}x  {'met' if met else 'MISSED'}")
    stream = stream_tokens_per_s(args.seq_len, args.repeats)
    print(f"{'k_dyck stream':<19}{stream:>15.3e}{'':>15}{'':>9}  (masked batches of 256, one worker)")


if __name__ == "__main__":
    main()
