"""Grid values that are YAML lists or mappings, and names of runs whose values are long (e.g. file paths)."""

import pytest

from vitwarm.sweeps.grid import parse_grid, run_name, split_values


def test_commas_inside_brackets_do_not_split_values():
    assert parse_grid("transfer.parts=[attn,mlp],[mlp],[attn, mlp, norm]") == (
        "transfer.parts", ["[attn,mlp]", "[mlp]", "[attn, mlp, norm]"])
    sources = '{attn: "a/warmup.safetensors", mlp: "b/warmup.safetensors"}'
    assert parse_grid(f"transfer.sources={{}},{sources}") == ("transfer.sources", ["{}", sources])
    assert split_values("0,0.01") == ["0", "0.01"]
    with pytest.raises(ValueError, match="empty value"):
        parse_grid("transfer.parts=[attn],,[mlp]")


def test_long_values_are_cut_and_hashed_in_run_names():
    short = {"warmup.fraction": "0.01", "seed": "1"}
    assert run_name(short) == "warmup.fraction=0.01__seed=1"  # unchanged
    a = {"transfer.sources": '{attn: "${run.dir}/../budget.epochs=4__procedural.grammar=k_dyck__seed=${seed}"}'}
    b = {"transfer.sources": '{attn: "${run.dir}/../budget.epochs=4__procedural.grammar=eca__seed=${seed}"}'}
    assert run_name(a) != run_name(b)
    assert run_name(a) == run_name(dict(a))  # deterministic
    assert len(run_name(a)) == len("transfer.sources=") + 20 + 10
    assert run_name(a).startswith("transfer.sources=-attn--")
