"""Every grammar against an independent plain-Python checker; registry, determinism and argument errors."""

import numpy as np
import pytest

from vitwarm.procedural import GRAMMARS, generate, get_grammar

from checkers import is_dyck_word

SEEDS = (0, 1, 7)


def sample(name, n, seq_len, seed, **params):
    """Tokens and target mask as lists of Python ints/bools, for the plain-Python checkers."""
    tokens, target_mask = get_grammar(name).sample(np.random.default_rng(seed), n, seq_len, **params)
    assert tokens.dtype == np.int64 and tokens.shape == (n, seq_len)
    assert target_mask.dtype == bool and target_mask.shape == (n, seq_len)
    return tokens.tolist(), target_mask.tolist()


# ---- bracket languages -------------------------------------------------------------------------


def is_shuffle_dyck_word(sequence, k):
    """Each type balanced on its own: no prefix closes more of a type than it opened; all closed at the end."""
    open_counts = [0] * k
    for token in sequence:
        if token < k:
            open_counts[token] += 1
        else:
            open_counts[token - k] -= 1
            if open_counts[token - k] < 0:
                return False
    return not any(open_counts)


def max_open(sequence, k):
    depth, deepest = 0, 0
    for token in sequence:
        depth += 1 if token < k else -1
        deepest = max(deepest, depth)
    return deepest


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("seq_len", "k"), [(2, 64), (16, 1), (64, 4), (196, 64)])
def test_k_dyck_is_balanced_and_nested(seed, seq_len, k):
    tokens, target_mask = sample("k_dyck", 1000, seq_len, seed, k=k)
    for sequence, targets in zip(tokens, target_mask):
        assert all(0 <= token < 2 * k for token in sequence)
        assert is_dyck_word(sequence, k)
        assert targets == [token >= k for token in sequence]


def test_k_dyck_uses_every_type_and_respects_p_open():
    tokens = generate("k_dyck", 2000, 64, seed=3, k=8)
    assert set(np.unique(tokens).tolist()) == set(range(16))
    # Lower p_open means shallower sequences on average.
    shallow = generate("k_dyck", 2000, 64, seed=3, k=8, p_open=0.2)
    assert np.mean([max_open(s, 8) for s in shallow.tolist()]) < np.mean([max_open(s, 8) for s in tokens.tolist()])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("seq_len", "k", "max_depth"), [(2, 64, None), (32, 2, None), (64, 4, 5), (196, 64, None)])
def test_k_dyck_shuffle_balances_each_type(seed, seq_len, k, max_depth):
    tokens, target_mask = sample("k_dyck_shuffle", 1000, seq_len, seed, k=k, max_depth=max_depth)
    for sequence, targets in zip(tokens, target_mask):
        assert all(0 <= token < 2 * k for token in sequence)
        assert is_shuffle_dyck_word(sequence, k)
        assert targets == [token >= k for token in sequence]
        if max_depth is not None:
            assert max_open(sequence, k) <= max_depth


def test_k_dyck_shuffle_crosses_types():
    """Unlike k_dyck, most shuffle sequences are not properly nested (a closer may close an older type)."""
    tokens = generate("k_dyck_shuffle", 500, 64, seed=0, k=4).tolist()
    nested = sum(is_dyck_word(sequence, 4) for sequence in tokens)
    assert nested < 0.2 * len(tokens)


def test_k_dyck_shuffle_closes_a_uniform_open_bracket():
    """A closer closes each open bracket with equal probability, whatever its age.

    With 4096 types the open brackets almost always have distinct types, so a closer's type tells which one
    it closed; count the closed bracket's age rank (0 = oldest) separately for 2..5 open brackets. A stack
    (always the newest) or a queue (always the oldest) would put every count in one rank.
    """
    ranks = {depth: [0] * depth for depth in range(2, 6)}
    for sequence in generate("k_dyck_shuffle", 3000, 64, seed=0, k=4096).tolist():
        open_types = []  # oldest first
        for token in sequence:
            if token < 4096:
                open_types.append(token)
                continue
            if len(open_types) in ranks and len(set(open_types)) == len(open_types):
                ranks[len(open_types)][open_types.index(token - 4096)] += 1
            open_types.remove(token - 4096)
    for depth, counts in ranks.items():
        total = sum(counts)
        assert total > 2000, (depth, total)
        expected = total / depth
        spread = np.sqrt(total * (1 / depth) * (1 - 1 / depth))  # binomial standard deviation
        assert all(abs(count - expected) < 5 * spread for count in counts), (depth, counts)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("seq_len", "k"), [(2, 1), (10, 3), (196, 128)])
def test_ww_second_half_copies_first(seed, seq_len, k):
    tokens, target_mask = sample("ww", 1000, seq_len, seed, k=k)
    half = seq_len // 2
    for sequence, targets in zip(tokens, target_mask):
        assert all(0 <= token < k for token in sequence)
        assert sequence[:half] == sequence[half:]
        assert targets == [False] * half + [True] * half


# ---- list tasks --------------------------------------------------------------------------------


def split_list_task(sequence, k, num_inputs):
    """(input segments, answer, index of the first output position) of an input|...|output|PAD layout."""
    separator, pad = k, k + 1
    separator_positions = [i for i, token in enumerate(sequence) if token == separator]
    assert len(separator_positions) == num_inputs
    bounds = [-1] + separator_positions
    inputs = [sequence[bounds[i] + 1 : bounds[i + 1]] for i in range(num_inputs)]
    output = sequence[separator_positions[-1] + 1 :]
    answer_length = output.index(pad) if pad in output else len(output)
    assert all(token == pad for token in output[answer_length:])
    return inputs, output[:answer_length], separator_positions[-1] + 1


def run_stack_program(program, k):
    contents = []
    for op in program:
        if op == k + 2:
            assert contents, "pop on an empty stack"
            contents.pop()
        else:
            assert 0 <= op < k
            contents.append(op)
    return contents


# name -> (number of input segments, input length for seq_len, answer computed from the inputs)
LIST_TASKS = {
    "identity": (1, lambda n: (n - 1) // 2, lambda x: x),
    "reverse": (1, lambda n: (n - 1) // 2, lambda x: x[::-1]),
    "sort": (1, lambda n: (n - 1) // 2, sorted),
    "set": (1, lambda n: (n - 1) // 2, lambda x: list(dict.fromkeys(x))),
    "union": (2, lambda n: (n - 2) // 4, lambda a, b: list(dict.fromkeys(a + b))),
    "delete": (2, lambda n: (n - 3) // 2, lambda x, s: [v for v in x if v != s[0]]),
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("seq_len", "k"), [(7, 1), (33, 4), (196, 64)])
@pytest.mark.parametrize("name", sorted(LIST_TASKS))
def test_list_task_outputs(name, seed, seq_len, k):
    num_inputs, input_length, answer_of = LIST_TASKS[name]
    tokens, target_mask = sample(name, 500, seq_len, seed, k=k)
    for sequence, targets in zip(tokens, target_mask):
        inputs, answer, output_start = split_list_task(sequence, k, num_inputs)
        assert len(inputs[0]) == input_length(seq_len)
        assert all(0 <= token < k for segment in inputs for token in segment)
        assert answer == answer_of(*inputs)
        assert targets == [i >= output_start for i in range(seq_len)]
        if name == "delete":
            assert len(inputs[1]) == 1 and inputs[1][0] in inputs[0]
        if name == "union":
            assert len(inputs[1]) == input_length(seq_len)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("seq_len", "k"), [(3, 1), (64, 4), (196, 64)])
def test_stack_output_is_final_contents(seed, seq_len, k):
    tokens, target_mask = sample("stack", 500, seq_len, seed, k=k)
    pops = 0
    for sequence, targets in zip(tokens, target_mask):
        (program,), answer, output_start = split_list_task(sequence, k, 1)
        assert len(program) == (seq_len - 1) // 2
        assert answer == run_stack_program(program, k)
        assert targets == [i >= output_start for i in range(seq_len)]
        pops += program.count(k + 2)
    assert seq_len < 64 or pops > 0


# ---- cellular automaton ------------------------------------------------------------------------


def next_eca_row(row, rule):
    width = len(row)
    return [(rule >> (4 * row[i - 1] + 2 * row[i] + row[(i + 1) % width])) & 1 for i in range(width)]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("seq_len", "rule", "width", "expected_width"), [
    (196, 110, None, 14), (64, 30, None, 8), (60, 90, 12, 12), (6, 184, 3, 3),
])  # fmt: skip
def test_eca_rows_follow_rule(seed, seq_len, rule, width, expected_width):
    tokens, target_mask = sample("eca", 300, seq_len, seed, rule=rule, width=width)
    for sequence, targets in zip(tokens, target_mask):
        rows = [sequence[i : i + expected_width] for i in range(0, seq_len, expected_width)]
        assert set(sequence) <= {0, 1}
        for previous, row in zip(rows, rows[1:]):
            assert row == next_eca_row(previous, rule)
        assert targets == [i >= expected_width for i in range(seq_len)]


# ---- registry, determinism, vocab --------------------------------------------------------------

@pytest.mark.parametrize("name", list(GRAMMARS))
def test_registry_entry_is_documented_and_ids_fit_vocab(name):
    grammar = GRAMMARS[name]
    for word in ("Ids", "vocab size", "Targets"):
        assert word in grammar.doc, f"{name} docstring lacks {word!r}"
    params = {"k": 3} if "k" in grammar.defaults else {}
    tokens = generate(name, 500, 64, seed=0, **params)
    assert tokens.min() >= 0 and tokens.max() < grammar.vocab_size(**params)
    assert len(grammar.glyphs(**params)) == grammar.vocab_size(**params)


@pytest.mark.parametrize("name", list(GRAMMARS))
def test_generate_is_deterministic_in_seed(name):
    first = generate(name, 64, 64, seed=5)
    assert first.dtype == np.int64 and first.flags.c_contiguous
    assert np.array_equal(first, generate(name, 64, 64, seed=5))
    assert not np.array_equal(first, generate(name, 64, 64, seed=6))
    assert generate(name, 0, 64).shape == (0, 64)


def test_required_grammars_and_default_vocab():
    assert {"k_dyck", "k_dyck_shuffle", "ww", "stack", "identity", "reverse", "sort", "set", "union",
            "delete", "eca"} <= set(GRAMMARS)  # fmt: skip
    assert GRAMMARS["k_dyck"].vocab_size() == 128
    assert GRAMMARS["k_dyck"].defaults == {"k": 64, "p_open": 0.5}
    assert GRAMMARS["eca"].row_length(196) == 14
    assert GRAMMARS["k_dyck"].glyphs(k=5)[:5] == ["(", "[", "{", "<", "(4"]


# ---- argument errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "seq_len", "params", "argument"), [
    ("no_such_grammar", 64, {}, "k_dyck"),  # the message lists the valid names
    ("k_dyck", 63, {}, "seq_len"),
    ("k_dyck_shuffle", 0, {}, "seq_len"),
    ("ww", 9, {}, "seq_len"),
    ("k_dyck", 64, {"k": 0}, "k"),
    ("k_dyck", 64, {"k": 10**9}, "k"),
    ("ww", 64, {"k": 2.5}, "k"),
    ("sort", 64, {"k": -1}, "k"),
    ("k_dyck", 64, {"p_open": 1.0}, "p_open"),
    ("k_dyck_shuffle", 64, {"p_open": 0}, "p_open"),
    ("k_dyck_shuffle", 64, {"max_depth": 0}, "max_depth"),
    ("stack", 64, {"p_push": 1.5}, "p_push"),
    ("k_dyck", 64, {"depth": 3}, "p_open"),  # unknown param: the message lists the valid ones
    ("eca", 64, {"rule": 256}, "rule"),
    ("eca", 64, {"width": 7}, "width"),
    ("eca", 64, {"width": 2}, "width"),
    ("eca", 4, {}, "seq_len"),
    ("eca", 13, {}, "width"),  # a prime length has no default width
    ("identity", 2, {}, "seq_len"),
    ("union", 5, {}, "seq_len"),
    ("delete", 4, {}, "seq_len"),
])  # fmt: skip
def test_bad_arguments_raise_value_error_naming_them(name, seq_len, params, argument):
    with pytest.raises(ValueError, match=argument):
        generate(name, 4, seq_len, **params)


def test_bad_n_and_seed():
    with pytest.raises(ValueError, match="n must"):
        generate("k_dyck", -1, 64)
    with pytest.raises(ValueError, match="seed"):
        generate("k_dyck", 1, 64, seed=-3)
