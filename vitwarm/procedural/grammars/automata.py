"""Elementary cellular automata: rows of a one-dimensional automaton laid out on the token grid."""

from __future__ import annotations

import numpy as np

from vitwarm.procedural.registry import check_int, register_grammar


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
