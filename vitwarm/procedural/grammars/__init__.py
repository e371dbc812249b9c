"""The grammar families, one module each; importing this package registers them all in
`vitwarm.procedural.registry`.

    dyck.py          k_dyck, and the bracket helpers the shuffle variants share
    dyck_shuffle.py  k_dyck_shuffle, k_dyck_shuffle_lm
    ww.py            ww (the copy language)
    automata.py      eca (elementary cellular automata)
    algorithmic.py   identity, reverse, sort, set, union, delete, stack (the companion LM work's families)
    arrays.py        numpy helpers the generators share

A new family is a new module here, imported below: its generators decorated with
``@register_grammar(name, vocab_size=...)`` (see registry.py for the contract).
"""

# Registration order is the order `vitwarm grammars list` shows: brackets first, as before.
from vitwarm.procedural.grammars import dyck, dyck_shuffle, ww, automata, algorithmic  # noqa: F401, I001
