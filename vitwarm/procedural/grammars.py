"""Bracket, copy and cellular-automaton grammars: k_dyck, k_dyck_shuffle (and its LM variant), ww, eca.

Generators are vectorised over the batch: they loop over positions (or rows), and each step is a few
whole-batch numpy operations. State arrays are laid out (position, batch) so that one step touches
contiguous memory; the result is transposed to (batch, position) at the end.
"""

from __future__ import annotations

import numpy as np
import torch

from vitwarm.procedural.registry import (
    MAX_K,
    check_even_seq_len,
    check_int,
    check_probability,
    register_grammar,
)

# Glyphs for the first bracket types; later types are printed with their number, e.g. "(7" and "7)".
BRACKET_PAIRS = ("()", "[]", "{}", "<>")


def bracket_glyphs(k: int, **_: object) -> list[str]:
    """Printable glyphs for ids 0..2k-1: openers first, then the matching closers."""
    openers = [BRACKET_PAIRS[i][0] if i < len(BRACKET_PAIRS) else f"({i}" for i in range(k)]
    closers = [BRACKET_PAIRS[i][1] if i < len(BRACKET_PAIRS) else f"{i})" for i in range(k)]
    return openers + closers


def _check_brackets(seq_len: int, grammar: str, k: int, p_open: float) -> None:
    check_even_seq_len(seq_len, grammar)
    check_int("k", k, 1, MAX_K)
    check_probability("p_open", p_open)


def coin_flips(rng: np.random.Generator, shape: tuple[int, ...], p: float) -> np.ndarray:
    """bool array, each True with probability p rounded to a multiple of 2**-16.

    16-bit draws compared with a threshold cost about a quarter of float draws; the rounding (at most
    1.5e-5) is far below anything a warm-up could notice.
    """
    threshold = min(max(round(p * 2**16), 1), 2**16 - 1)
    return rng.integers(0, 2**16, size=shape, dtype=np.uint16) < threshold


def narrow_id_dtype(num_ids: int) -> type[np.signedinteger]:
    """int16 when every id fits, else int32: narrow state keeps the position loop's working set in cache
    (about 2x faster than int32 at n=16384)."""
    return np.int16 if num_ids <= np.iinfo(np.int16).max + 1 else np.int32


def _opener_types(rng: np.random.Generator, n: int, seq_len: int, k: int) -> np.ndarray:
    """(seq_len, n) uniform opener types, in the narrow dtype that also holds the closers (< 2k)."""
    return rng.integers(0, k, size=(seq_len, n), dtype=narrow_id_dtype(2 * k))


def _blend_into(out: np.ndarray, value: np.ndarray, mask: np.ndarray, scratch: np.ndarray) -> None:
    """out[mask] = value[mask] for narrow integer arrays, as out += mask * (value - out).

    On the random masks of the position loops this is about 4x faster than np.where or a masked np.copyto,
    whose per-element branches mispredict half the time.
    """
    np.subtract(value, out, out=scratch)
    scratch *= mask
    out += scratch


def _batch_major(tokens: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(seq_len, n) bracket ids -> C-contiguous int64 (n, seq_len) and the closer mask (ids >= k).

    torch's transposing copy is cache-blocked and about twice as fast as numpy's for this shape, which
    matters because the transpose is a sixth of a k_dyck call.
    """
    tokens = torch.from_numpy(tokens).T.contiguous().long().numpy()  # (n, seq_len)
    return tokens, tokens >= k


@register_grammar("k_dyck", vocab_size=lambda k, **_: 2 * k, glyphs=bracket_glyphs)
def k_dyck(rng: np.random.Generator, n: int, seq_len: int, k: int = 64, p_open: float = 0.5):
    """Balanced, properly nested brackets of k types (the k-Dyck language).

    Ids: 0..k-1 are openers, i+k closes opener i; vocab size 2k (the default k=64 gives the paper's 128).
    Each position opens with probability p_open unless forced: at depth 0 it must open, and it must close
    when the depth equals the number of positions left, so every sequence is exactly balanced. Opener
    types are uniform. A closer always closes the most recently opened bracket.
    Targets: the closers (their type is determined by the rest of the sequence).
    seq_len must be even and >= 2.
    """
    _check_brackets(seq_len, "k_dyck", k, p_open)
    wants_open = coin_flips(rng, (seq_len, n), p_open)
    opener_types = _opener_types(rng, n, seq_len, k)
    closer_ids = opener_types + k
    # The stack is flat, laid out (depth, batch) so that sequences at equal depth share cache lines; row 0 is
    # a dummy. top[b] = depth * n + b indexes the cell holding the closer id of sequence b's innermost open
    # bracket (the dummy at depth 0); an opener pushes into the cell one row above, `above[top]`.
    stack = np.zeros((seq_len // 2 + 2) * n, dtype=opener_types.dtype)
    above = stack[n:]
    top = np.arange(n, dtype=np.intp)
    tokens = np.empty((seq_len, n), dtype=opener_types.dtype)
    opens = np.empty(n, dtype=bool)
    step = np.empty(n, dtype=np.intp)
    scratch = np.empty(n, dtype=opener_types.dtype)
    for t in range(seq_len):
        # Every operation writes into preallocated arrays: at n = 16384 allocation would cost as much as the math.
        np.less(top, (seq_len - t) * n, out=opens)  # depth < positions left: closing is not forced
        opens &= wants_open[t]
        opens |= top < n  # depth 0: opening is forced
        row = tokens[t]
        stack.take(top, out=row)  # a closer repeats the innermost opener's closer id
        _blend_into(row, opener_types[t], opens, scratch)  # an opening step emits its opener
        above[top] = closer_ids[t]  # push (for a closer this writes a cell above the top: free, harmless)
        np.multiply(opens, 2 * n, out=step)
        step -= n
        top += step  # one row up or down
    return _batch_major(tokens, k)


CLOSE_CHOICES = ("bracket", "type")


@register_grammar("k_dyck_shuffle", vocab_size=lambda k, **_: 2 * k, glyphs=bracket_glyphs)
def k_dyck_shuffle(
    rng: np.random.Generator,
    n: int,
    seq_len: int,
    k: int = 64,
    p_open: float = 0.5,
    max_depth: int | None = None,
    close_at_end: bool = True,
    close_choice: str = "bracket",
):
    """Brackets of k types, each type balanced on its own; types may interleave and cross (shuffle-Dyck).

    Ids: 0..k-1 are openers, i+k closes an open bracket of type i; vocab size 2k.
    A closer closes any currently open bracket, not only the most recent one. Which one: close_choice
    'bracket' picks uniformly among all open brackets (a type with more open brackets is closed more often);
    'type' picks the type uniformly among the types that are open, whatever their counts. Each position
    opens with probability p_open unless forced: at depth 0 it must open; it must close when the number of
    open brackets reaches max_depth (None: no bound beyond the length) or, with close_at_end, equals the
    positions left. close_at_end=True closes every bracket by the end (seq_len must then be even);
    False leaves the end open. No prefix closes more brackets of a type than it opened.
    The companion LM work's generator is max_depth=16, close_at_end=False, close_choice='type'
    (grammar k_dyck_shuffle_lm).
    Targets: the closers. Several closers can be valid at a position (any open type); the target is the
    one that was sampled, so even a perfect model cannot reach 100% masked-token accuracy.
    """
    if close_choice not in CLOSE_CHOICES:
        raise ValueError(f"close_choice must be one of {', '.join(CLOSE_CHOICES)}, got {close_choice!r}")
    if not isinstance(close_at_end, (bool, np.bool_)):
        raise ValueError(f"close_at_end must be true or false, got {close_at_end!r}")
    if close_at_end:
        _check_brackets(seq_len, "k_dyck_shuffle", k, p_open)
    else:
        check_int("seq_len", seq_len, 1)
        check_int("k", k, 1, MAX_K)
        check_probability("p_open", p_open)
    depth_bound = seq_len // 2 if close_at_end else seq_len
    if max_depth is not None:
        depth_bound = min(check_int("max_depth", max_depth, 1), depth_bound)
    wants_open = coin_flips(rng, (seq_len, n), p_open)
    opener_types = _opener_types(rng, n, seq_len, k)
    # Uniform 32-bit draws; (draw * m) >> 32 is a uniform index in [0, m) (bias below 2**-16).
    close_draws = rng.integers(0, 2**32, size=(seq_len, n), dtype=np.uint32)
    # Closing is forced at position t when the depth reaches limits[t].
    limits = np.full(seq_len, depth_bound)
    if close_at_end:
        np.minimum(limits, np.arange(seq_len, 0, -1), out=limits)  # the positions left
    close = _close_any_bracket if close_choice == "bracket" else _close_any_type
    return _batch_major(close(wants_open, opener_types, close_draws, limits, k, depth_bound), k)


def _close_any_bracket(wants_open, opener_types, close_draws, limits, k, depth_bound):
    """(seq_len, n) shuffle-Dyck ids whose closers close a uniform open bracket (see k_dyck_shuffle)."""
    seq_len, n = opener_types.shape
    closer_ids = opener_types + k
    ids = opener_types.dtype
    # The open bag is flat, laid out (row, batch) as k_dyck's stack: rows 1..depth of sequence b (slots
    # row * n + b) hold the closer ids of its open brackets, in no order; row 0 is a dummy and row depth + 1
    # is free. Every step runs the same whole-batch operations for openers and closers (no masked writes,
    # which cost more than the arithmetic here): a step that opens rewrites a bag slot with its own value.
    bag = np.zeros((depth_bound + 2) * n, dtype=ids)
    above = bag[n:]
    batch = np.arange(n)
    first_row = batch + n  # slots of row 1
    depth = np.zeros(n, dtype=narrow_id_dtype(depth_bound + 1))
    opens, at_zero = np.empty(n, dtype=bool), np.empty(n, dtype=bool)
    picked, top = np.empty(n, dtype=np.intp), np.empty(n, dtype=np.intp)
    last, scratch = np.empty(n, dtype=ids), np.empty(n, dtype=ids)
    tokens = np.empty((seq_len, n), dtype=ids)
    for t in range(seq_len):
        np.less(depth, limits[t], out=opens)
        opens &= wants_open[t]
        opens |= np.equal(depth, 0, out=at_zero)  # depth 0: opening is forced
        np.multiply(close_draws[t], depth, out=picked)
        picked >>= 32  # uniform in [0, depth): ...
        picked *= n
        picked += first_row  # ... a uniform open bracket, rows 1..depth
        np.multiply(depth, n, out=top, dtype=np.intp)
        top += batch  # the last open bracket (the dummy at depth 0)
        row = tokens[t]
        bag.take(picked, out=row)  # the closer, if this step closes
        bag.take(top, out=last)
        # Swap-remove: a closing step moves the last open bracket into the picked slot; an opening step
        # writes the picked slot's own value back.
        _blend_into(last, row, opens, scratch)
        bag[picked] = last
        above[top] = closer_ids[t]  # push (after a close this writes a free row: harmless)
        _blend_into(row, opener_types[t], opens, scratch)  # an opening step emits its opener
        depth += opens
        depth -= ~opens
    return tokens


def _close_any_type(wants_open, opener_types, close_draws, limits, k, depth_bound):
    """(seq_len, n) shuffle-Dyck ids whose closers close a uniform open *type* (see k_dyck_shuffle)."""
    seq_len, n = opener_types.shape
    ids = opener_types.dtype
    batch = np.arange(n)
    # counts[type * n + b]: open brackets of each type in sequence b. Rows 0..m-1 of the flat `kinds`
    # ((row, batch) as the bag of _close_any_bracket) list sequence b's m distinct open types, in no order.
    # As there, every step runs the same whole-batch operations into preallocated arrays for openers and
    # closers alike; a step that does not change a slot writes its own value back.
    counts = np.zeros(k * n, dtype=narrow_id_dtype(depth_bound + 1))
    kinds = np.zeros((min(k, depth_bound) + 1) * n, dtype=ids)
    distinct = np.zeros(n, dtype=np.intp)  # m per sequence
    depth = np.zeros(n, dtype=np.intp)
    opens, closes, at_zero, removes, adds = (np.empty(n, dtype=bool) for _ in range(5))
    picked, cell, slot, step = (np.empty(n, dtype=np.intp) for _ in range(4))
    kind, picked_kind, last_kind, scratch = (np.empty(n, dtype=ids) for _ in range(4))
    before, after = np.empty(n, dtype=counts.dtype), np.empty(n, dtype=counts.dtype)
    tokens = np.empty((seq_len, n), dtype=ids)
    for t in range(seq_len):
        np.less(depth, limits[t], out=opens)
        opens &= wants_open[t]
        opens |= np.equal(depth, 0, out=at_zero)  # depth 0: opening is forced
        np.logical_not(opens, out=closes)
        np.multiply(close_draws[t], distinct, out=picked)
        picked >>= 32  # uniform in [0, m): ...
        picked *= n
        picked += batch  # ... the slot of a uniform open type
        kinds.take(picked, out=picked_kind)
        np.copyto(kind, picked_kind)
        _blend_into(kind, opener_types[t], opens, scratch)  # the type this step opens or closes
        np.multiply(kind, n, out=cell, dtype=np.intp)
        cell += batch
        counts.take(cell, out=before)
        np.multiply(opens, 2, out=step)
        step -= 1  # +1 opens, -1 closes
        np.add(before, step, out=after, casting="unsafe")
        counts[cell] = after
        # A closer that empties its type swap-removes it from the list (the last listed type fills the slot).
        np.equal(after, 0, out=removes)
        removes &= closes
        np.subtract(distinct, 1, out=slot)
        np.maximum(slot, 0, out=slot)
        slot *= n
        slot += batch
        kinds.take(slot, out=last_kind)
        _blend_into(picked_kind, last_kind, removes, scratch)
        kinds[picked] = picked_kind
        # An opener of a type not yet open appends it (else this writes an unused row: harmless).
        np.multiply(distinct, n, out=slot)
        slot += batch
        kinds[slot] = opener_types[t]
        np.equal(before, 0, out=adds)
        adds &= opens
        distinct += adds
        distinct -= removes
        depth += step
        np.multiply(closes, k, out=scratch, casting="unsafe")
        np.add(kind, scratch, out=tokens[t])  # closers are type + k
    return tokens


@register_grammar("k_dyck_shuffle_lm", vocab_size=lambda k, **_: 2 * k, glyphs=bracket_glyphs)
def k_dyck_shuffle_lm(rng: np.random.Generator, n: int, seq_len: int, k: int = 64, p_open: float = 0.5,
                      max_depth: int = 16):
    """k_dyck_shuffle as the companion LM work generates it: depth cap 16, open ends, uniform open type.

    Ids: 0..k-1 are openers, i+k closes an open bracket of type i; vocab size 2k.
    Exactly k_dyck_shuffle(close_at_end=False, close_choice='type'): at depth 0 open a uniform type; at
    depth max_depth close; otherwise open with probability p_open, else close a type chosen uniformly
    among the open types. Brackets still open at the end stay open; any seq_len >= 1.
    Targets: the closers (the sampled one, although any open type would be valid).
    """
    return k_dyck_shuffle(rng, n, seq_len, k=k, p_open=p_open, max_depth=max_depth, close_at_end=False,
                          close_choice="type")


@register_grammar("ww", vocab_size=lambda k, **_: k)
def ww(rng: np.random.Generator, n: int, seq_len: int, k: int = 128):
    """A random string w of seq_len/2 symbols followed by its exact copy (the copy language ww).

    Ids: 0..k-1, uniform i.i.d. symbols; vocab size k (default 128, the size of the paper's vocabulary).
    Targets: the second half (the copy). seq_len must be even and >= 2.
    """
    check_even_seq_len(seq_len, "ww")
    check_int("k", k, 1, MAX_K)
    half = rng.integers(0, k, size=(n, seq_len // 2))
    tokens = np.concatenate([half, half], axis=1)
    target_mask = np.zeros((n, seq_len), dtype=bool)
    target_mask[:, seq_len // 2 :] = True
    return tokens, target_mask


def eca_width(seq_len: int, width: int | None = None, **_: object) -> int:
    """The automaton width: ``width`` if given, else the largest divisor of seq_len that is <= sqrt(seq_len).

    The default makes the grid as square as possible, e.g. 14 x 14 for seq_len 196 (a 224 px ViT/16 grid).
    """
    check_int("seq_len", seq_len, 6, why="the automaton needs at least 2 rows of 3 cells")
    if width is None:
        width = max(d for d in range(1, int(np.sqrt(seq_len)) + 1) if seq_len % d == 0)
        if width < 3:
            raise ValueError(
                f"seq_len {seq_len} has no divisor in [3, sqrt(seq_len)] to use as the default width; "
                "pass width explicitly (a divisor of seq_len, >= 3)"
            )
    check_int("width", width, 3, seq_len // 2, why="at least 3 cells and 2 rows")
    if seq_len % width:
        raise ValueError(f"seq_len ({seq_len}) must be a multiple of width ({width})")
    return width


@register_grammar("eca", vocab_size=lambda **_: 2, glyphs=lambda **_: [".", "#"], row_length=eca_width)
def eca(rng: np.random.Generator, n: int, seq_len: int, rule: int = 110, width: int | None = None):
    """Rows of an elementary cellular automaton (Wolfram rule numbering, periodic boundary).

    Ids: 0 and 1 (cell states); vocab size 2. The sequence is seq_len/width rows of width cells in
    raster order: a uniformly random first row, then each row is the rule applied to the previous one
    (cell i reads cells i-1, i, i+1, wrapping around). Default rule 110; default width: the largest
    divisor of seq_len that is <= sqrt(seq_len) (14 for 196, 8 for 64). width must divide seq_len, be >= 3
    and leave at least 2 rows.
    Targets: every row after the first.
    """
    check_int("rule", rule, 0, 255)
    width = eca_width(seq_len, width)
    num_rows = seq_len // width
    # new state of a cell = bit (4*left + 2*centre + right) of the rule number
    rule_table = (rule >> np.arange(8)) & 1
    grid = np.empty((num_rows, n, width), dtype=np.int64)
    grid[0] = rng.integers(0, 2, size=(n, width))
    for row in range(1, num_rows):
        previous = grid[row - 1]
        neighbourhood = 4 * np.roll(previous, 1, axis=1) + 2 * previous + np.roll(previous, -1, axis=1)
        grid[row] = rule_table[neighbourhood]
    tokens = np.ascontiguousarray(grid.transpose(1, 0, 2).reshape(n, seq_len))
    target_mask = np.zeros((n, seq_len), dtype=bool)
    target_mask[:, width:] = True
    return tokens, target_mask
