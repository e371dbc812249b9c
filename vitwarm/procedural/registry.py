"""The grammar registry: every procedural family is a pure numpy function registered under a name.

A grammar function has the signature ``fn(rng, n, seq_len, **params) -> (tokens, target_mask)``:
``tokens`` is int64 of shape (n, seq_len) and ``target_mask`` is bool of the same shape, True where the
rest of the sequence determines the value (the positions masked-token prediction may hide). Functions
validate their own parameters and raise ``ValueError`` naming the bad argument.

``register_grammar`` fills ``GRAMMARS``; ``generate`` is the user-facing entry point.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

# Upper bound on any alphabet size k. It catches typos (k=10**9) before they turn into giant
# embedding tables; no published setting comes near it (the paper uses k <= 80).
MAX_K = 65536

GrammarFn = Callable[..., tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Grammar:
    """One registered grammar: its generator, parameter defaults, vocabulary and display helpers."""

    name: str
    fn: GrammarFn
    defaults: dict[str, Any]
    vocab_size_fn: Callable[..., int]
    # Display helpers for the viewer: a printable glyph per token id, and (for grid-shaped grammars)
    # the number of tokens per printed row.
    glyphs_fn: Callable[..., list[str]] | None
    row_length_fn: Callable[..., int | None] | None
    doc: str

    @property
    def summary(self) -> str:
        return self.doc.splitlines()[0] if self.doc else ""

    def resolve(self, params: dict[str, Any]) -> dict[str, Any]:
        """Defaults overridden by ``params``; an unknown parameter is a ValueError listing valid ones."""
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {unknown} for grammar {self.name!r}; "
                f"valid parameters: {sorted(self.defaults) or 'none'}"
            )
        return {**self.defaults, **params}

    def vocab_size(self, **params: Any) -> int:
        """Number of ids this grammar can emit (its own ids, specials such as MASK not included)."""
        return self.vocab_size_fn(**self.resolve(params))

    def glyphs(self, **params: Any) -> list[str]:
        """A printable string for every id below ``vocab_size``."""
        resolved = self.resolve(params)
        if self.glyphs_fn is None:
            return [str(i) for i in range(self.vocab_size_fn(**resolved))]
        return self.glyphs_fn(**resolved)

    def row_length(self, seq_len: int, **params: Any) -> int | None:
        """Tokens per printed row for grid-shaped grammars, None for plain sequences."""
        if self.row_length_fn is None:
            return None
        return self.row_length_fn(seq_len, **self.resolve(params))

    def sample(
        self, rng: np.random.Generator, n: int, seq_len: int, **params: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """``n`` sequences of length ``seq_len`` and their target masks, drawn from ``rng``."""
        check_int("n", n, 0)
        check_int("seq_len", seq_len, 1)
        return self.fn(rng, n, seq_len, **self.resolve(params))


GRAMMARS: dict[str, Grammar] = {}


def register_grammar(
    name: str,
    *,
    vocab_size: Callable[..., int],
    glyphs: Callable[..., list[str]] | None = None,
    row_length: Callable[..., int | None] | None = None,
) -> Callable[[GrammarFn], GrammarFn]:
    """Decorator registering ``fn(rng, n, seq_len, **params)`` under ``name``.

    The keyword parameters after ``seq_len`` and their defaults become the grammar's parameters.
    ``vocab_size``, ``glyphs`` and ``row_length`` receive every parameter (defaults filled in) as
    keywords; ``row_length`` also receives ``seq_len`` first.
    """

    def decorate(fn: GrammarFn) -> GrammarFn:
        if name in GRAMMARS:
            raise ValueError(f"grammar {name!r} is already registered")
        params = list(inspect.signature(fn).parameters.values())[3:]
        GRAMMARS[name] = Grammar(
            name=name,
            fn=fn,
            defaults={p.name: p.default for p in params},
            vocab_size_fn=vocab_size,
            glyphs_fn=glyphs,
            row_length_fn=row_length,
            doc=inspect.getdoc(fn) or "",
        )
        return fn

    return decorate


def get_grammar(name: str) -> Grammar:
    """The registered grammar ``name``; an unknown name is a ValueError listing the valid ones."""
    if name not in GRAMMARS:
        raise ValueError(f"unknown grammar {name!r}; valid grammars: {', '.join(GRAMMARS)}")
    return GRAMMARS[name]


def generate(name: str, n: int, seq_len: int, seed: int = 0, **params: Any) -> np.ndarray:
    """``n`` raw sequences of grammar ``name``: int64 array (n, seq_len), deterministic in ``seed``."""
    grammar = get_grammar(name)
    check_int("seed", seed, 0)
    tokens, _ = grammar.sample(np.random.default_rng(seed), n, seq_len, **params)
    return tokens


# ---- argument checks shared by the grammar functions ---------------------------------------------


def check_int(name: str, value: Any, low: int, high: int | None = None, why: str = "") -> int:
    """``value`` as an int, or a ValueError naming ``name`` and the valid range [low, high]."""
    is_int = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not is_int or value < low or (high is not None and value > high):
        valid = f"[{low}, {high}]" if high is not None else f">= {low}"
        reason = f" ({why})" if why else ""
        raise ValueError(f"{name} must be an integer {valid}{reason}, got {value!r}")
    return int(value)


def check_probability(name: str, value: Any) -> float:
    """``value`` as a float strictly inside (0, 1), or a ValueError naming ``name``."""
    is_number = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
    if not is_number or not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be a number in the open interval (0, 1), got {value!r}")
    return float(value)


def check_even_seq_len(seq_len: int, grammar: str) -> None:
    """Dyck words and w·w strings exist only for even lengths."""
    check_int("seq_len", seq_len, 2)
    if seq_len % 2:
        raise ValueError(f"seq_len must be even for {grammar} (got {seq_len})")
