"""Algorithmic families (stack, identity, reverse, sort, set, union, delete) as fixed-length masked tasks.

The companion language-model work trained on these as sequence-to-sequence problems. Here each sample
is one fixed-length sequence laid out as

    input segment(s), separated by SEP | SEP | output segment | PAD up to seq_len

with symbols 0..k-1, SEP = k, PAD = k+1 (and, for stack only, POP = k+2). Input segments have a fixed
length, the largest that leaves room for the longest possible output. Outputs of variable length are
followed by PAD. Targets are every position after the last SEP: the output and its PAD fill, because
where the output ends is part of the answer.
"""

from __future__ import annotations

import numpy as np

from vitwarm.procedural.grammars.arrays import coin_flips, narrow_id_dtype
from vitwarm.procedural.registry import MAX_K, check_int, check_probability, register_grammar


def _separator(k: int) -> int:
    return k


def _pad(k: int) -> int:
    return k + 1


def _pop(k: int) -> int:
    return k + 2


def list_vocab_size(k: int, **_: object) -> int:
    return k + 2  # symbols, SEP, PAD


def list_glyphs(k: int, **_: object) -> list[str]:
    return [str(i) for i in range(k)] + ["|", "."]


def _input_length(seq_len: int, k: int, grammar: str, num_segments: int, num_fixed: int) -> int:
    """Length of each input segment when seq_len holds ``num_segments`` segments of that length
    (inputs and the longest output) plus ``num_fixed`` single tokens (separators, a query symbol)."""
    check_int("k", k, 1, MAX_K)
    check_int(
        "seq_len", seq_len, num_segments + num_fixed, why=f"{grammar} needs an input of at least 1 symbol"
    )
    return (seq_len - num_fixed) // num_segments


def _assemble(seq_len: int, k: int, inputs: list[np.ndarray], output: np.ndarray):
    """Joins ``inputs`` with SEP after each, appends ``output`` (n, out_len), fills PAD up to seq_len.

    Returns (tokens, target_mask) with targets = every position from the start of the output on.
    """
    n = output.shape[0]
    separator = np.full((n, 1), _separator(k), dtype=np.int64)
    parts = []
    for segment in inputs:
        parts += [segment, separator]
    parts.append(output)
    output_start = sum(part.shape[1] for part in parts) - output.shape[1]
    fill = seq_len - output_start - output.shape[1]
    parts.append(np.full((n, fill), _pad(k), dtype=np.int64))
    tokens = np.concatenate(parts, axis=1)
    target_mask = np.zeros((n, seq_len), dtype=bool)
    target_mask[:, output_start:] = True
    return tokens, target_mask


def _first_occurrences(strings: np.ndarray) -> np.ndarray:
    """bool (n, L): True where a symbol appears for the first time in its row."""
    order = np.argsort(strings, axis=1, kind="stable")
    ordered = np.take_along_axis(strings, order, axis=1)
    # After a stable sort, the first of each run of equal symbols is the earliest occurrence.
    first_in_order = np.ones(strings.shape, dtype=bool)
    first_in_order[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    is_first = np.empty_like(first_in_order)
    np.put_along_axis(is_first, order, first_in_order, axis=1)
    return is_first


def _compact(strings: np.ndarray, keep: np.ndarray, pad: int) -> np.ndarray:
    """The kept symbols of each row moved to the front in their order, PAD after them; shape kept."""
    order = np.argsort(~keep, axis=1, kind="stable")
    kept_first = np.take_along_axis(strings, order, axis=1)
    num_kept = keep.sum(axis=1, keepdims=True)
    return np.where(np.arange(strings.shape[1]) < num_kept, kept_first, pad)


def _unary_input(rng: np.random.Generator, n: int, seq_len: int, k: int, grammar: str) -> np.ndarray:
    """A uniform random input string (n, (seq_len-1)//2) for tasks with one input and output <= input."""
    length = _input_length(seq_len, k, grammar, num_segments=2, num_fixed=1)
    return rng.integers(0, k, size=(n, length))


@register_grammar("identity", vocab_size=list_vocab_size, glyphs=list_glyphs)
def identity(rng: np.random.Generator, n: int, seq_len: int, k: int = 64):
    """Copy: x | x (x of (seq_len-1)//2 uniform symbols).

    Ids: symbols 0..k-1, SEP=k, PAD=k+1; vocab size k+2. Targets: everything after SEP.
    """
    strings = _unary_input(rng, n, seq_len, k, "identity")
    return _assemble(seq_len, k, [strings], strings)


@register_grammar("reverse", vocab_size=list_vocab_size, glyphs=list_glyphs)
def reverse(rng: np.random.Generator, n: int, seq_len: int, k: int = 64):
    """Reversal: x | reversed(x) (x of (seq_len-1)//2 uniform symbols).

    Ids: symbols 0..k-1, SEP=k, PAD=k+1; vocab size k+2. Targets: everything after SEP.
    """
    strings = _unary_input(rng, n, seq_len, k, "reverse")
    return _assemble(seq_len, k, [strings], strings[:, ::-1])


@register_grammar("sort", vocab_size=list_vocab_size, glyphs=list_glyphs)
def sort(rng: np.random.Generator, n: int, seq_len: int, k: int = 64):
    """Sorting: x | x sorted ascending by id (x of (seq_len-1)//2 uniform symbols, repeats kept).

    Ids: symbols 0..k-1, SEP=k, PAD=k+1; vocab size k+2. Targets: everything after SEP.
    """
    strings = _unary_input(rng, n, seq_len, k, "sort")
    return _assemble(seq_len, k, [strings], np.sort(strings, axis=1))


@register_grammar("set", vocab_size=list_vocab_size, glyphs=list_glyphs)
def dedup(rng: np.random.Generator, n: int, seq_len: int, k: int = 64):
    """Set: x | x without repeats, keeping first occurrences in order, then PAD.

    x has (seq_len-1)//2 uniform symbols. Ids: symbols 0..k-1, SEP=k, PAD=k+1; vocab size k+2.
    Targets: everything after SEP.
    """
    strings = _unary_input(rng, n, seq_len, k, "set")
    return _assemble(seq_len, k, [strings], _compact(strings, _first_occurrences(strings), _pad(k)))


@register_grammar("union", vocab_size=list_vocab_size, glyphs=list_glyphs)
def union(rng: np.random.Generator, n: int, seq_len: int, k: int = 64):
    """Union: a | b | the distinct symbols of a then b, in order of first occurrence, then PAD.

    a and b are strings of (seq_len-2)//4 uniform symbols each, read as sets (a symbol may repeat; it is
    listed once). Ids: symbols 0..k-1, SEP=k, PAD=k+1; vocab size k+2. Targets: everything after the
    second SEP.
    """
    length = _input_length(seq_len, k, "union", num_segments=4, num_fixed=2)
    first, second = rng.integers(0, k, size=(2, n, length))
    both = np.concatenate([first, second], axis=1)
    return _assemble(seq_len, k, [first, second], _compact(both, _first_occurrences(both), _pad(k)))


@register_grammar("delete", vocab_size=list_vocab_size, glyphs=list_glyphs)
def delete(rng: np.random.Generator, n: int, seq_len: int, k: int = 64):
    """Deletion: x | s | x with every s removed, then PAD.

    x has (seq_len-3)//2 uniform symbols; s is a symbol drawn from a uniform position of x, so at least
    one deletion happens. Ids: symbols 0..k-1, SEP=k, PAD=k+1; vocab size k+2. Targets: everything after
    the second SEP.
    """
    length = _input_length(seq_len, k, "delete", num_segments=2, num_fixed=3)
    strings = rng.integers(0, k, size=(n, length))
    deleted = np.take_along_axis(strings, rng.integers(0, length, size=(n, 1)), axis=1)  # (n, 1)
    return _assemble(seq_len, k, [strings, deleted], _compact(strings, strings != deleted, _pad(k)))


@register_grammar(
    "stack", vocab_size=lambda k, **_: k + 3, glyphs=lambda k, **_: list_glyphs(k) + ["^"]
)
def stack(rng: np.random.Generator, n: int, seq_len: int, k: int = 64, p_push: float = 0.5):
    """Stack machine: a program of push/pop operations | the final stack contents (bottom first), then PAD.

    The program has (seq_len-1)//2 operations; each pushes a uniform symbol with probability p_push and
    pops otherwise, except that an empty stack always pushes. Ids: push of symbol s = s (0..k-1), SEP=k,
    PAD=k+1, POP=k+2; vocab size k+3. Targets: everything after SEP.
    """
    check_probability("p_push", p_push)
    length = _input_length(seq_len, k, "stack", num_segments=2, num_fixed=1)
    wants_push = coin_flips(rng, (length, n), p_push)
    symbols = rng.integers(0, k, size=(length, n), dtype=narrow_id_dtype(k + 3))
    batch = np.arange(n)
    # contents[d, b] is the symbol at height d of sequence b's stack; operations are laid out (time, batch).
    contents = np.zeros((length + 1, n), dtype=symbols.dtype)
    depth = np.zeros(n, dtype=np.int64)
    program = np.empty((length, n), dtype=symbols.dtype)
    for t in range(length):
        pushes = (depth == 0) | wants_push[t]
        program[t] = np.where(pushes, symbols[t], _pop(k))
        # For a pop this writes to the free slot above the top, which is harmless.
        contents[depth, batch] = symbols[t]
        depth += np.where(pushes, 1, -1)
    final_stack = np.where(np.arange(length) < depth[:, None], contents[:length].T, _pad(k)).astype(np.int64)
    return _assemble(seq_len, k, [program.T.astype(np.int64)], final_stack)
