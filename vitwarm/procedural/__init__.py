"""Procedural token sequences for the warm-up phase: grammar registry, generators, masking, token stream.

    from vitwarm.procedural import GRAMMARS, generate, ProceduralTask, TokenStream

``GRAMMARS`` maps names to registered grammars (k_dyck, k_dyck_shuffle, k_dyck_shuffle_lm, ww, stack, identity, reverse,
sort, set, union, delete, eca); ``generate`` draws raw sequences; ``ProceduralTask`` turns a grammar (or a
weighted mixture) into masked-prediction batches addressed by global sample index; ``TokenStream`` is the
infinite, rank- and worker-sharded torch dataset over a task. ``vitwarm grammars`` prints
examples.
"""

# Importing the grammar modules registers their grammars.
from vitwarm.procedural import grammars  # noqa: F401
from vitwarm.procedural.masking import mask_targets, shuffle_within_sequences
from vitwarm.procedural.registry import GRAMMARS, Grammar, generate, get_grammar, register_grammar
from vitwarm.procedural.stream import ProceduralTask, TokenStream, parse_mixture

__all__ = [
    "GRAMMARS",
    "Grammar",
    "ProceduralTask",
    "TokenStream",
    "generate",
    "get_grammar",
    "mask_targets",
    "parse_mixture",
    "register_grammar",
    "shuffle_within_sequences",
]
