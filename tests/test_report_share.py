"""The report's gain against warm-up compute share, and its compute-matched line, against hand-computed values.

A fixture sweep (cell keys warmup.fraction, budget.regime, budget.epochs; seeds 0-2; numbers by construction):

    cell                          top1 per seed   image samples   warm-up FLOPs / image FLOPs
    baseline, 4 epochs            60 62 64        1000            -
    baseline, 8 epochs            70 71 75        2000            -
    control of 0.5, 4 epochs      61 63 66        1100            - (compute-matched: 10% more images)
    warm-up 0.5, 4 epochs         61 65 66        1000            10 / 100
    warm-up 0.5, 8 epochs         71 74 -         2000            10 / 200

Paired by seed against the 4-epoch baseline: the warm-up gains 1, 3, 2 (mean 2, sem 1/sqrt 3), the control
1, 1, 2 (mean 4/3) at share 0.1, the 8-epoch baseline 10, 9, 11 (mean 10) at share 1.0. So the line from
1,000 images reads 4/3 at the warm-up's share 0.1, and the warm-up lies above it. The 8-epoch warm-up gains
1, 3 (seeds 0-1) at share 0.05 over a baseline with no larger one beside it: no line value.
"""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from vitwarm.analysis.report import build_report
from vitwarm.analysis.results import group_cells, load_results
from vitwarm.sweeps.grid import plan_sweep, write_sweep

from helpers import write_finished

RUNS = {  # (fraction, regime, epochs) -> (top1 per seed, image samples, warm-up FLOPs, image FLOPs)
    ("0", "additive", "4"): ([60.0, 62.0, 64.0], 1000, 0.0, 100.0),
    ("0", "additive", "8"): ([70.0, 71.0, 75.0], 2000, 0.0, 200.0),
    ("0.5", "compute_matched", "4"): ([61.0, 63.0, 66.0], 1100, 0.0, 110.0),
    ("0.5", "additive", "4"): ([61.0, 65.0, 66.0], 1000, 10.0, 100.0),
    ("0.5", "additive", "8"): ([71.0, 74.0], 2000, 10.0, 200.0),
}


def phases(warmup_flops: float, image_flops: float) -> dict:
    image = {"flops": image_flops, "used_flops": image_flops}
    # The warm-up's planned FLOPs are twice what its stop used: the share counts what was used.
    return {"image": image, "warmup": {"flops": 2 * warmup_flops, "used_flops": warmup_flops}} if warmup_flops else {
        "image": image}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("share")
    recipe = root / "recipe.yaml"
    recipe.write_text("seed: 0\nbudget:\n  regime: additive\n")
    # Two plans into one directory, as a study adds its cells (a control needs warmup.fraction > 0)
    for fractions, regime, epochs in ((["0", "0.5"], "additive", ["4", "8"]), (["0.5"], "compute_matched", ["4"])):
        grids = {"warmup.fraction": fractions, "budget.regime": [regime], "budget.epochs": epochs,
                 "seed": ["0", "1", "2"]}
        sweep = plan_sweep(str(recipe), grids, {}, root / "sweep")
        write_sweep(sweep)
        for run in sweep.runs:
            fraction, regime, epochs, seed = run.overrides.values()
            scores, samples, warmup_flops, image_flops = RUNS[(fraction, regime, epochs)]
            if int(seed) >= len(scores):
                continue  # planned, never run
            run_dir = sweep.run_dir(run)
            config = {"seed": int(seed), "warmup": {"fraction": float(fraction)},
                      "budget": {"epochs": float(epochs), "regime": regime}}
            OmegaConf.save(OmegaConf.create(config), run_dir / "config.yaml")
            write_finished(run_dir, sweep.identity(run), top1=scores[int(seed)], image_samples=samples,
                           phases=phases(warmup_flops, image_flops))
    return build_report(sweep.out, root / "report")


def row_of(rows: list[dict], epochs: float) -> dict:
    (row,) = [r for r in rows if r["budget.epochs"] == epochs]
    return row


def test_gain_and_share_are_paired_by_seed(report):
    rows = report["gain_vs_share"]["rows"]
    assert len(rows) == 2  # the warm-up cells; the control is a baseline cell (no warm-up runs in it)
    four, eight = row_of(rows, 4.0), row_of(rows, 8.0)
    assert four["share"] == pytest.approx(0.1) and eight["share"] == pytest.approx(0.05)
    assert four["gain"]["seeds"] == [0, 1, 2] and four["gain"]["mean"] == pytest.approx(2.0)
    assert four["gain"]["sem"] == pytest.approx(1 / 3**0.5)
    assert eight["gain"]["seeds"] == [0, 1] and eight["gain"]["mean"] == pytest.approx(2.0)


def test_the_compute_matched_line_runs_through_the_control_and_the_longer_baseline(report):
    lines = {line["image_samples"]: line["points"] for line in report["gain_vs_share"]["lines"]}
    assert [(p["share"], p["mean"]) for p in lines[1000]] == [
        (0.0, 0.0), (pytest.approx(0.1), pytest.approx(4 / 3)), (pytest.approx(1.0), pytest.approx(10.0))]
    assert [(p["share"], p["mean"]) for p in lines[2000]] == [(0.0, 0.0)]
    assert row_of(report["gain_vs_share"]["rows"], 4.0)["images_gain"] == pytest.approx(4 / 3)
    assert row_of(report["gain_vs_share"]["rows"], 8.0)["images_gain"] is None  # no extrapolation


def test_the_table_and_the_figure(report, tmp_path):
    # +2.00 over three seeds with se 0.58 (t = 3.46) is not shown: the 95% bar at two degrees of freedom is 4.30
    assert ("| 0.5 | additive | 4.0 | 1,000 | 10.00% | 3 | 0–2 | +2.00 | 0.58 | [-0.48, +4.48] | 0.074 | no "
            "| +1.33 |") in report["markdown"]
    assert ("| 0.5 | additive | 8.0 | 2,000 | 5.00% | 2 | 0–1 | +2.00 | 1.00 | [-10.71, +14.71] | 0.295 | no "
            "| - |") in report["markdown"]
    assert "top1_gain_vs_warmup_share.png" in report["plots"]


def test_a_control_matched_to_each_seeds_run_is_one_cell(tmp_path):
    # budget.matched_to names the warm-up run of the control's own seed: the written override (one setting)
    # makes the cell, not the resolved path of each seed.
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("seed: 0\nwarmup:\n  fraction: 0.5\nbudget:\n  regime: compute_matched\n")
    grids = {"budget.matched_to": ["${run.dir}/../warm_seed=${seed}"], "seed": ["0", "1"]}
    sweep = plan_sweep(str(recipe), grids, {}, tmp_path / "sweep")
    write_sweep(sweep)
    for run in sweep.runs:
        seed = run.overrides["seed"]
        run_dir = sweep.run_dir(run)
        config = {"seed": int(seed), "budget": {"matched_to": f"{run_dir}/../warm_seed={seed}"}}
        OmegaConf.save(OmegaConf.create(config), run_dir / "config.yaml")
        write_finished(run_dir, sweep.identity(run), top1=60.0 + int(seed))
    (cell,) = group_cells(load_results(sweep.out))
    assert cell.values == {"budget.matched_to": "${run.dir}/../warm_seed=${seed}"} and len(cell.runs) == 2


def test_runs_without_phase_flops_are_left_out_with_a_note(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("seed: 0\n")
    sweep = plan_sweep(str(recipe), {"warmup.fraction": ["0", "0.5"], "seed": ["0"]}, {}, tmp_path / "sweep")
    write_sweep(sweep)
    for run in sweep.runs:
        run_dir = sweep.run_dir(run)
        OmegaConf.save(OmegaConf.create({"seed": 0, "warmup": {"fraction": float(run.overrides["warmup.fraction"])}}),
                       run_dir / "config.yaml")
        write_finished(run_dir, sweep.identity(run))  # phases {}: a run of a version before phases were recorded
    report = build_report(sweep.out, tmp_path / "report")
    assert report["gain_vs_share"]["rows"] == []
    assert any("warmup.fraction=0.5: not in the gain-vs-share figure, its runs record no phase FLOPs" in n
               for n in report["notes"])


def test_each_context_has_its_own_line(tmp_path):
    """Two model inits with the same image count: each warm-up is read against its own context's line."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("seed: 0\nbudget:\n  regime: additive\n")
    top1 = {  # (init, fraction, epochs) -> top1 of seed 0; warm-up FLOPs are 10% of the 4-epoch image phase
        ("default", "0", "4"): 60.0, ("default", "0", "8"): 70.0, ("default", "0.5", "4"): 61.0,
        ("mimetic", "0", "4"): 50.0, ("mimetic", "0", "8"): 52.0, ("mimetic", "0.5", "4"): 51.0,
    }
    grids = {"model.init": ["default", "mimetic"], "warmup.fraction": ["0", "0.5"], "budget.epochs": ["4", "8"],
             "seed": ["0"]}
    sweep = plan_sweep(str(recipe), grids, {}, tmp_path / "sweep")
    write_sweep(sweep)
    for run in sweep.runs:
        init, fraction, epochs, _ = run.overrides.values()
        if (init, fraction, epochs) not in top1:
            continue  # planned, never run
        run_dir = sweep.run_dir(run)
        config = {"seed": 0, "model": {"init": init}, "warmup": {"fraction": float(fraction)},
                  "budget": {"epochs": float(epochs), "regime": "additive"}}
        OmegaConf.save(OmegaConf.create(config), run_dir / "config.yaml")
        write_finished(run_dir, sweep.identity(run), top1=top1[(init, fraction, epochs)],
                       image_samples=250 * int(epochs), phases=phases(10.0 if fraction == "0.5" else 0.0, 100.0))
    share = build_report(sweep.out, tmp_path / "report")["gain_vs_share"]
    # At share 0.1 the line from 1,000 images reads 10 * 0.1 = 1.0 (default) and 2 * 0.1 = 0.2 (mimetic).
    assert {r["model.init"]: r["images_gain"] for r in share["rows"]} == {
        "default": pytest.approx(1.0), "mimetic": pytest.approx(0.2)}
    assert sorted(line["model.init"] for line in share["lines"]) == ["default", "mimetic"]
