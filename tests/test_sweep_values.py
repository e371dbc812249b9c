"""Grid values that are YAML lists or mappings, and names of runs whose values are long (e.g. file paths)."""

import pytest

from vitwarm.analysis.equivalence import baseline_curves
from vitwarm.analysis.results import RunResult, SweepResults, fraction_of
from vitwarm.sweeps.grid import parse_grid, split_values
from vitwarm.sweeps.names import run_name


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
    assert run_name(short) == "fraction=0.01__seed=1"  # unchanged
    a = {"transfer.sources": '{attn: "${run.dir}/../epochs=4__grammar=k_dyck__seed=${seed}/warmup"}'}
    b = {"transfer.sources": '{attn: "${run.dir}/../epochs=4__grammar=eca__seed=${seed}/warmup"}'}
    assert run_name(a) != run_name(b)
    assert run_name(a) == run_name(dict(a))  # deterministic
    assert len(run_name(a)) == len("sources=") + 12 + 10
    assert run_name(a).startswith("sources=attn-run.dir")


def test_compute_matched_runs_are_points_of_the_baseline_curve():
    """No warm-up phase, more image steps: the report puts them on the baseline's accuracy-vs-images curve."""
    def run(name, fraction, regime, images, top1):
        config = {"warmup.fraction": fraction, "budget.regime": regime, "budget.epochs": 4.0}
        return RunResult(name, config, {"top1": top1, "image_samples": images}, [])

    runs = [run("base", 0.0, "additive", 22016, 64.0), run("matched", 1.0, "compute_matched", 44032, 70.0),
            run("kdyck", 1.0, "additive", 22016, 67.0)]
    assert [fraction_of(r.config) for r in runs] == [0.0, 0.0, 1.0]
    keys = ["budget.epochs", "warmup.fraction", "budget.regime"]  # the same budget.epochs: told apart by images
    results = SweepResults(cell_keys=keys, runs=runs, unfinished=[], notes=[])
    (points,) = baseline_curves(results, "top1").values()
    assert [(p["image_samples"], p["mean"]) for p in points] == [(22016, 64.0), (44032, 70.0)]
