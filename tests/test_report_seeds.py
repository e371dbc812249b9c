"""The report compares on matched seeds, flags pairs from different machines, and refuses what it cannot compare.

A fixture sweep whose numbers are known by construction (cell keys warmup.fraction and budget.epochs; top1
per seed; image samples 1000 at 4 epochs, 2000 at 8):

    cell                  seeds   top1 per seed            mean (all)   mean (seeds 0-2)
    baseline, 4 epochs    0-4     60 62 64 70 74           66           62
    baseline, 8 epochs    0-2     70 72 74                 72           72
    warm-up, 4 epochs     0-4     66 66 69 75 74           70           67
    warm-up, 8 epochs     1-3     75 78 90                 81           -

Every run records the environment of this machine at one clean commit, except warm-up 4 epochs seed 1
(another CPU and kernel level), baseline 8 epochs seed 1 (another commit) and warm-up 8 epochs seed 2 (none,
as archived runs of earlier versions).
"""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from vitwarm.analysis.report import build_report
from vitwarm.cli.report import main
from vitwarm.run.rundir import OVERRIDES, environment, read_summary, write_summary
from vitwarm.sweeps.grid import plan_sweep, write_sweep

from helpers import write_finished

TOP1 = {
    ("0", "4"): [60.0, 62.0, 64.0, 70.0, 74.0],
    ("0", "8"): [70.0, 72.0, 74.0],
    ("1.0", "4"): [66.0, 66.0, 69.0, 75.0, 74.0],
    ("1.0", "8"): [None, 75.0, 78.0, 90.0],  # seeds 1-3
}
# The source as a clean checkout records it (this test may run in a modified one).
HERE = environment("cpu", 1) | {"source": {"version": "0.1.0", "commit": "1" * 40, "modified": False}}
OTHER = HERE | {"cpu": "another CPU model", "torch_cpu_capability": "AVX2" if HERE["torch_cpu_capability"] != "AVX2"
                else "AVX512"}
LATER = HERE | {"source": {"version": "0.1.0", "commit": "2" * 40, "modified": False}}
MACHINE = {("1.0", "4", "1"): OTHER, ("0", "8", "1"): LATER, ("1.0", "8", "2"): {}}


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("seeds")
    recipe = root / "recipe.yaml"
    recipe.write_text("seed: 0\nbudget:\n  regime: additive\n")
    grids = {"warmup.fraction": ["0", "1.0"], "budget.epochs": ["4", "8"], "seed": ["0", "1", "2", "3", "4"]}
    sweep = plan_sweep(str(recipe), grids, {}, root / "sweep")
    write_sweep(sweep)
    for run in sweep.runs:
        fraction, epochs, seed = run.overrides.values()
        scores = TOP1[(fraction, epochs)]
        if int(seed) >= len(scores) or scores[int(seed)] is None:
            continue  # planned, never run
        run_dir = sweep.run_dir(run)
        run_dir.mkdir(parents=True, exist_ok=True)  # write_sweep made it (with its overrides file)
        config = {"seed": int(seed), "warmup": {"fraction": float(fraction)}, "budget": {"epochs": float(epochs)}}
        OmegaConf.save(OmegaConf.create(config), run_dir / "config.yaml")
        write_finished(run_dir, sweep.identity(run), top1=scores[int(seed)], image_samples=250 * int(epochs),
                       environment=MACHINE.get((fraction, epochs, seed), HERE))
    return sweep.out


def row_of(rows: list[dict], fraction: float, epochs: float) -> dict:
    (row,) = [r for r in rows if r["warmup.fraction"] == fraction and r["budget.epochs"] == epochs]
    return row


@pytest.fixture(scope="module")
def report(sweep_dir: Path, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("seeds_report")
    return build_report(sweep_dir, out, paired_to=["warmup.fraction=0,budget.epochs=4",
                                                   "warmup.fraction=0,budget.epochs=8"])


def test_data_equivalence_uses_the_seeds_every_baseline_point_has(report):
    four = row_of(report["data_equivalence"], 1.0, 4.0)
    # The 8-epoch baseline has seeds 0-2 only: the curve is (1000, 62) - (2000, 72) and a_w = 67, the
    # warm-up's mean over seeds 0-2 (not 70 against 66 over seeds 0-4): S* = 1500, worth +50%, saved 1/3.
    assert four["seeds"] == [0, 1, 2]
    assert four["baseline"] == [{"image_samples": 1000, "mean": 62.0}, {"image_samples": 2000, "mean": 72.0}]
    assert four["metric"] == pytest.approx(67.0) and four["sem"] == pytest.approx(1.0)  # std sqrt(3) of 66, 66, 69
    assert (four["point"]["relation"], four["point"]["s_star"]) == ("=", pytest.approx(1500.0))
    assert four["point"]["worth"] == pytest.approx(0.5) and four["point"]["saved"] == pytest.approx(1 / 3)
    assert four["low"]["s_star"] == pytest.approx(1400.0) and four["high"]["s_star"] == pytest.approx(1600.0)
    # The 8-epoch warm-up has seeds 1-3; seeds 1 and 2 are in every baseline point: curve (1000, 63) -
    # (2000, 73); its 76.5 lies above it, so only the bound S* > 2000 is given.
    eight = row_of(report["data_equivalence"], 1.0, 8.0)
    assert eight["seeds"] == [1, 2] and eight["metric"] == pytest.approx(76.5)
    assert [p["mean"] for p in eight["baseline"]] == pytest.approx([63.0, 73.0])
    assert (eight["point"]["relation"], eight["point"]["s_star"]) == (">", 2000.0)
    assert "| 1.0 | 4.0 | 0–2 | 67.00 | 1,000 | 1,500 | 33.3% | [28.6%, 37.5%] | 50.0% |" in report["markdown"]


def test_paired_rows_use_the_seeds_both_cells_have(report):
    to_four, to_eight = report["paired"]
    warm = row_of(to_four["rows"], 1.0, 4.0)
    assert warm["seeds"] == [0, 1, 2, 3, 4] and warm["differences"] == pytest.approx([6.0, 4.0, 5.0, 5.0, 0.0])
    assert warm["mean"] == pytest.approx(4.0) and warm["std"] == pytest.approx(5.5**0.5)
    # Baseline 8 (seeds 0-2) minus baseline 4: seeds 0-2 only, +10 each.
    longer = row_of(to_four["rows"], 0.0, 8.0)
    assert longer["seeds"] == [0, 1, 2] and longer["differences"] == pytest.approx([10.0, 10.0, 10.0])
    # Warm-up 8 (seeds 1-3) minus baseline 8 (seeds 0-2): seeds 1 and 2, +3 and +4 (not 81 - 72 = 9).
    warm8 = row_of(to_eight["rows"], 1.0, 8.0)
    assert warm8["seeds"] == [1, 2] and warm8["differences"] == pytest.approx([3.0, 4.0])
    assert (warm8["n"], warm8["mean"], warm8["sem"], warm8["t"]) == pytest.approx((2, 3.5, 0.5, 7.0))
    # t = 7 is fourteen standard errors... of two pairs: one degree of freedom puts the 95% bar at t = 12.71.
    assert warm8["df"] == 1 and warm8["ci"] == pytest.approx([3.5 - 12.7062 * 0.5, 3.5 + 12.7062 * 0.5], abs=1e-3)
    assert not warm8["shown"]
    assert "| 1.0 | 8.0 | 2 | 1–2 | +3.50 | 0.50 | [-2.85, +9.85] | 0.090 | no | +3.00 / +4.00 |" in report["markdown"]


def test_a_pair_from_different_machines_or_commits_is_flagged(report):
    to_four, to_eight = report["paired"]
    warm = row_of(to_four["rows"], 1.0, 4.0)
    assert warm["machines"] == {"same": False, "differ_seeds": [1], "differ_keys": ["cpu", "torch_cpu_capability"],
                                "unknown_seeds": [], "unknown_keys": []}
    # baseline 8 epochs seed 1 ran at another commit: the same machine, not the same code
    longer = row_of(to_four["rows"], 0.0, 8.0)["machines"]
    assert (longer["same"], longer["differ_seeds"], longer["differ_keys"]) == (False, [1], ["source"])
    assert row_of(to_eight["rows"], 1.0, 8.0)["machines"]["unknown_seeds"] == [2]
    markdown = report["markdown"]
    assert "| +6.00 / +4.00 / +5.00 / +5.00 / +0.00 | differ† (seeds 1: cpu, torch_cpu_capability) |" in markdown
    assert "| +10.00 / +10.00 / +10.00 | differ† (seeds 1: source) |" in markdown
    assert "| +3.00 / +4.00 | differ† (seeds 1: source); not recorded‡ (seeds 2: machine, source) |" in markdown
    assert "† the two runs of these seeds recorded different environments" in markdown
    assert "‡ not recorded (the fields listed)" in markdown
    # The data-equivalence estimate of warm-up 4 used seed 1's runs from two machines as well.
    assert row_of(report["data_equivalence"], 1.0, 4.0)["machines"]["differ_seeds"] == [1]


def beside(sweep_dir: Path, tmp_path: Path, change) -> Path:
    """A copy of the sweep with one run copied beside the others under a new name, its files changed by
    ``change(config, summary)``: a run found by scanning, as when archived runs are copied together."""
    sweep = shutil.copytree(sweep_dir, tmp_path / "sweep")
    source = next(sweep.glob("fraction=1.0__epochs=4__seed=0"))
    copy = shutil.copytree(source, sweep / "copied_run")
    (copy / OVERRIDES).unlink()  # as a run of an earlier version: its config.yaml and summary.json say what it is
    config = OmegaConf.load(copy / "config.yaml")
    summary = read_summary(copy)
    change(config, summary)
    OmegaConf.save(config, copy / "config.yaml")
    write_summary(copy, summary)
    return sweep


def other_model(config, summary) -> None:
    config.seed = 5
    summary.identity |= {"seed": 5, "model.name": "vit_small_patch16_224"}


def report_command(sweep: Path, out: Path) -> tuple[int, list[str]]:
    """(exit status, stderr lines) of ``tools/report.py SWEEP --out OUT``, called in this interpreter (the
    entry point's ``main``; ``sys.exit(message)`` is what a real process prints to stderr and exits 1 with)."""
    stderr = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
        try:
            status = main([str(sweep), "--out", str(out)])
        except SystemExit as exit_:
            status = exit_.code if isinstance(exit_.code, int) else 1
            stderr.write(f"{exit_.code}\n" if isinstance(exit_.code, str) else "")
    return status, stderr.getvalue().strip().splitlines()


@pytest.mark.parametrize(
    "change, says",
    [
        (lambda config, summary: None, "has two runs of seed 0 (fraction=1.0__epochs=4__seed=0, "
                                       "copied_run): report the two sets apart"),
        (other_model, "mixes runs that differ in keys the cell keys do not name (fraction=1.0__epochs=4__seed=0 "
                      "vs copied_run: model.name: "),
    ],
    ids=["same seed twice", "another model"],
)
def test_a_mixed_selection_is_refused_in_one_line(sweep_dir, tmp_path, change, says):
    status, lines = report_command(beside(sweep_dir, tmp_path, change), tmp_path / "out")
    assert status == 1
    assert len(lines) == 1 and lines[0].startswith("vitwarm: error: cell warmup.fraction=1.0, budget.epochs=4.0 ")
    assert says in lines[0]
    assert not (tmp_path / "out").exists()  # refused before any file


def test_an_empty_selection_is_refused_in_one_line(tmp_path):
    (tmp_path / "sweep").mkdir()
    assert report_command(tmp_path / "sweep", tmp_path / "out") == (1, [
        f"vitwarm: error: {tmp_path / 'sweep'} has no finished runs to report: no run directories"])
    assert not (tmp_path / "out").exists()



def test_a_key_renamed_since_is_not_a_mix(sweep_dir, tmp_path):
    """Archived runs of an earlier version name train.lr_warmup_epochs train.warmup_epochs: same setting."""
    def older(config, summary) -> None:
        config.seed = 5
        identity = dict(summary.identity)
        identity["train.warmup_epochs"] = identity.pop("train.lr_warmup_epochs")
        summary.identity = identity | {"seed": 5}

    status, lines = report_command(beside(sweep_dir, tmp_path, older), tmp_path / "out")
    assert (status, lines) == (0, [])
    assert (tmp_path / "out" / "report.md").exists()


def test_a_control_matched_to_each_seeds_warmup_is_one_point_of_the_curve(tmp_path):
    """A control matched to its own seed's warm-up run sees a few more or fewer images per seed (the second
    study's W1 controls: 22,208 and 22,272). Split by image count, each point held one seed or two, no seed was
    in all of them, and no warm-up cell got a data-equivalence estimate.

        cell (seeds 0, 1)           images        top1       curve on seeds 0-1
        baseline, 4 epochs          1000, 1000    60, 62     (1000, 61)
        control of 0.5, 4 epochs    1100, 1120    61, 63     (1110, 62)
        baseline, 8 epochs          2000, 2000    70, 72     (2000, 71)
        warm-up 0.5, 4 epochs       1000, 1000    66, 68     a_w = 67: S* = 1110 + 890 * 5/9
    """
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("seed: 0\nbudget:\n  regime: additive\n")
    runs = {  # (fraction, regime, epochs) -> (top1, image samples) per seed
        ("0", "additive", "4"): ([60.0, 62.0], [1000, 1000]),
        ("0", "additive", "8"): ([70.0, 72.0], [2000, 2000]),
        ("0.5", "additive", "4"): ([66.0, 68.0], [1000, 1000]),
        ("0.5", "compute_matched", "4"): ([61.0, 63.0], [1100, 1120]),
    }
    plans = ((["0", "0.5"], "additive", ["4", "8"], "null"),
             (["0.5"], "compute_matched", ["4"], "${run.dir}/../warm_seed=${seed}"))
    for fractions, regime, epochs, matched_to in plans:  # two plans into one directory, as a study adds cells
        grids = {"warmup.fraction": fractions, "budget.regime": [regime], "budget.epochs": epochs,
                 "budget.matched_to": [matched_to], "seed": ["0", "1"]}
        sweep = plan_sweep(str(recipe), grids, {}, tmp_path / "sweep")
        write_sweep(sweep)
        for run in sweep.runs:
            fraction, regime, epochs, _, seed = run.overrides.values()
            if (fraction, regime, epochs) not in runs:
                continue  # planned, never run
            scores, samples = runs[(fraction, regime, epochs)]
            run_dir = sweep.run_dir(run)
            config = {"seed": int(seed), "warmup": {"fraction": float(fraction)},
                      "budget": {"epochs": float(epochs), "regime": regime,
                                 "matched_to": None if matched_to == "null" else f"{run_dir}/../warm_seed={seed}"}}
            OmegaConf.save(OmegaConf.create(config), run_dir / "config.yaml")
            write_finished(run_dir, sweep.identity(run), top1=scores[int(seed)], image_samples=samples[int(seed)])
    (row,) = build_report(sweep.out, tmp_path / "report")["data_equivalence"]
    assert row["seeds"] == [0, 1]
    assert row["baseline"] == [{"image_samples": 1000, "mean": 61.0}, {"image_samples": 1110, "mean": 62.0},
                               {"image_samples": 2000, "mean": 71.0}]
    assert (row["point"]["relation"], row["point"]["s_star"]) == ("=", pytest.approx(1110 + 890 * 5 / 9))
