"""k-Dyck shuffle: brackets of k types, each type balanced on its own, types free to cross; and the companion
LM work's variant (k_dyck_shuffle_lm). Vectorised over the batch as k_dyck is (see dyck.py).
"""

from __future__ import annotations

import numpy as np

from vitwarm.procedural.grammars.arrays import coin_flips, narrow_id_dtype
from vitwarm.procedural.grammars.dyck import batch_major, blend_into, bracket_glyphs, check_brackets, opener_types_of
from vitwarm.procedural.registry import MAX_K, check_int, check_probability, register_grammar

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
        check_brackets(seq_len, "k_dyck_shuffle", k, p_open)
    else:
        check_int("seq_len", seq_len, 1)
        check_int("k", k, 1, MAX_K)
        check_probability("p_open", p_open)
    depth_bound = seq_len // 2 if close_at_end else seq_len
    if max_depth is not None:
        depth_bound = min(check_int("max_depth", max_depth, 1), depth_bound)
    wants_open = coin_flips(rng, (seq_len, n), p_open)
    opener_types = opener_types_of(rng, n, seq_len, k)
    # Uniform 32-bit draws; (draw * m) >> 32 is a uniform index in [0, m) (bias below 2**-16).
    close_draws = rng.integers(0, 2**32, size=(seq_len, n), dtype=np.uint32)
    # Closing is forced at position t when the depth reaches limits[t].
    limits = np.full(seq_len, depth_bound)
    if close_at_end:
        np.minimum(limits, np.arange(seq_len, 0, -1), out=limits)  # the positions left
    close = _close_any_bracket if close_choice == "bracket" else _close_any_type
    return batch_major(close(wants_open, opener_types, close_draws, limits, k, depth_bound), k)


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
        blend_into(last, row, opens, scratch)
        bag[picked] = last
        above[top] = closer_ids[t]  # push (after a close this writes a free row: harmless)
        blend_into(row, opener_types[t], opens, scratch)  # an opening step emits its opener
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
        blend_into(kind, opener_types[t], opens, scratch)  # the type this step opens or closes
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
        blend_into(picked_kind, last_kind, removes, scratch)
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
