"""The sweep report on a synthetic sweep directory whose numbers are known by construction.

Grid: warmup.fraction 0 / 0.01 / 0.05 x data.train_fraction 0.25 / 0.5 / 1.0 x seed 0 / 1. Fractions 0 and
0.01 finished (two seeds each); of fraction 0.05 one run is interrupted and the others never started.
Each pair of seeds scores mean ± 1 (so std = sqrt(2), sem = 1):

    data fraction          0.25      0.5       1.0
    baseline   images     10000    20000     40000     top1 60 / 70 / 76
    warm-up    images      9900    19800     39600     top1 64 / 73 / 79   (substitutive: 1% fewer images)
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import matplotlib.image
import pytest
from omegaconf import OmegaConf

from vitwarm.analysis.equivalence import invert_curve
from vitwarm.analysis.report import build_report
from vitwarm.analysis.results import load_results
from vitwarm.cli.report import main as report_main
from vitwarm.run.rundir import read_overrides, read_summary, write_overrides, write_summary
from vitwarm.sweeps.grid import plan_sweep, write_sweep

from helpers import write_finished

REPO = Path(__file__).resolve().parents[1]
TRAIN_FRACTIONS = {"0.25": 10000, "0.5": 20000, "1.0": 40000}
TOP1 = {("0", "0.25"): 60.0, ("0", "0.5"): 70.0, ("0", "1.0"): 76.0}
TOP1.update({("0.01", "0.25"): 64.0, ("0.01", "0.5"): 73.0, ("0.01", "1.0"): 79.0})
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_run(run_dir: Path, fraction: str, train_fraction: str, seed: str, identity: dict | None = None) -> None:
    """A run directory as the trainer leaves it; finished (under ``identity``) unless that is None."""
    run_dir.mkdir(parents=True, exist_ok=True)  # the sweep made it for its overrides file
    config = {
        "seed": int(seed),
        "model": {"name": "vit_tiny_patch16_224"},
        "procedural": {"grammar": "k_dyck", "shuffled": False},
        "warmup": {"fraction": float(fraction)},
        "budget": {"regime": "substitutive", "epochs": 4},
        "data": {"train_fraction": float(train_fraction)},
        "run": {"dir": str(run_dir)},
        "resume": "auto",
    }
    OmegaConf.save(OmegaConf.create(config), run_dir / "config.yaml")
    if identity is None:
        return
    images = TRAIN_FRACTIONS[train_fraction] * (0.99 if fraction != "0" else 1)
    top1 = TOP1[(fraction, train_fraction)] + (-1.0 if seed == "0" else 1.0)
    records = [{"phase": "image", "step": 1, "samples": 32, "image_samples": 32, "loss": 2.0, "lr": 1e-3}]
    # Warmed-up runs start behind: their first evaluation is 10 points lower than the baseline's.
    early = 20.0 if fraction == "0" else 10.0
    for share, score in ((0.5, early), (1.0, top1)):
        record = {"event": "eval", "phase": "image", "step": 2, "image_samples": int(images * share)}
        records.append({**record, "split": "validation", "top1": score, "top5": 99.0, "loss": 1.0})
    # A resumed run re-evaluates a point: the last record wins. A test-split record must be ignored.
    records.insert(1, {**records[1], "top1": 0.0})
    records.append({**records[-1], "split": "test", "top1": 1.0})
    lines = [json.dumps(r) for r in records] + ['{"event": "eval", "cut by a cra']
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    write_finished(run_dir, identity, top1=top1, top5=99.0, image_samples=int(images),
                   warmup_samples=0 if fraction == "0" else 4000,
                   masked_acc=None if fraction == "0" else (0.7 if seed == "0" else 0.8),
                   train_s=100.0 if seed == "0" else 200.0)


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    recipe = root / "recipe.yaml"
    recipe.write_text("seed: 0\n")
    grids = {"warmup.fraction": ["0", "0.01", "0.05"], "data.train_fraction": list(TRAIN_FRACTIONS), "seed": ["0", "1"]}
    sweep = plan_sweep(str(recipe), grids, {}, root / "sweep")
    write_sweep(sweep)
    for run in sweep.runs:
        fraction, train_fraction, seed = run.overrides.values()
        if fraction != "0.05":
            write_run(sweep.run_dir(run), fraction, train_fraction, seed, sweep.identity(run))
    write_run(sweep.out / "fraction=0.05__train_fraction=1.0__seed=0", "0.05", "1.0", "0")
    return sweep.out


@pytest.fixture(scope="module")
def report(sweep_dir: Path) -> dict:
    build_report(sweep_dir, out=sweep_dir / "report")
    return json.loads((sweep_dir / "report" / "report.json").read_text())


def find(rows: list[dict], fraction: float, train_fraction: float) -> dict:
    (row,) = [r for r in rows if r["warmup.fraction"] == fraction and r["data.train_fraction"] == train_fraction]
    return row


def test_cells_are_means_over_seeds(report):
    assert report["cell_keys"] == ["warmup.fraction", "data.train_fraction"]
    assert len(report["cells"]) == 6
    row = find(report["cells"], 0.01, 0.5)
    assert row["n"] == 2
    assert row["mean"] == pytest.approx(73.0)
    assert row["std"] == pytest.approx(math.sqrt(2))
    assert row["sem"] == pytest.approx(1.0)
    assert row["image_samples"] == pytest.approx(19800)
    assert row["masked_acc"] == pytest.approx(0.75)
    assert row["train_s"] == pytest.approx(150.0)
    assert find(report["cells"], 0.0, 1.0)["masked_acc"] is None


def test_csv_matches(sweep_dir, report):
    with open(sweep_dir / "report" / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    row = next(r for r in rows if r["warmup.fraction"] == "0.0" and r["data.train_fraction"] == "0.25")
    assert float(row["mean"]) == pytest.approx(60.0)
    assert float(row["std"]) == pytest.approx(math.sqrt(2))
    assert row["masked_acc"] == ""
    assert row["runs"].split(";") == [
        "fraction=0__train_fraction=0.25__seed=0",
        "fraction=0__train_fraction=0.25__seed=1",
    ]


def test_data_equivalence_matches_hand_computation(report):
    estimates = {e["data.train_fraction"]: e for e in report["data_equivalence"]}
    assert set(estimates) == {0.25, 0.5, 1.0}
    # 64 lies between the baseline's 60 (10000 images) and 70 (20000): S* = 10000 + 0.4 * 10000.
    quarter = estimates[0.25]["point"]
    assert quarter["relation"] == "="
    assert quarter["s_star"] == pytest.approx(14000)
    assert quarter["saved"] == pytest.approx(1 - 9900 / 14000)
    assert quarter["worth"] == pytest.approx(14000 / 9900 - 1)
    # 73 lies between 70 (20000) and 76 (40000): S* = 20000 + 0.5 * 20000. The bootstrap draws a seed's
    # warm-up run and baseline points together: here each seed moves all of them by the same point (-1 or
    # +1), so every resample finds the same S*, and the interval closes on it. A sem-wide band of a_w alone
    # (72 and 74 on the mean curve) would give 26,667 to 33,333: the seed noise the pairing removes.
    half = estimates[0.5]
    assert half["point"]["s_star"] == pytest.approx(30000)
    assert half["point"]["saved"] == pytest.approx(1 - 19800 / 30000)
    assert half["low"]["s_star"] == pytest.approx(30000) and half["high"]["s_star"] == pytest.approx(30000)
    # 79 is above every baseline accuracy: only the bound S* > 40000 is reported.
    full = estimates[1.0]["point"]
    assert (full["relation"], full["s_star"]) == (">", 40000)
    assert full["saved"] == pytest.approx(1 - 39600 / 40000)


def test_unfinished_runs_are_listed(sweep_dir, report):
    unfinished = {u["name"]: u["state"] for u in report["unfinished"]}
    assert len(unfinished) == 6
    assert unfinished["fraction=0.05__train_fraction=1.0__seed=0"] == "interrupted"
    assert unfinished["fraction=0.05__train_fraction=0.25__seed=1"] == "not started"
    markdown = (sweep_dir / "report" / "report.md").read_text()
    assert "## Unfinished runs (left out: 6)" in markdown
    assert "- fraction=0.05__train_fraction=1.0__seed=0 (interrupted)" in markdown
    assert any("unreadable line" in n for n in report["notes"])


def test_markdown_table(sweep_dir, report):
    markdown = (sweep_dir / "report" / "report.md").read_text()
    assert "| 0.01 | 0.5 | 2 | 73.00 ± 1.41 | 19,800 | 4,000 | 0.750 | - | - / - | 150 |" in markdown  # no probe here
    assert "| 0.01 | 1.0 | 0–1 | 79.00 | 39,600 | >40,000 | >1.0% |" in markdown
    for name in report["plots"]:
        assert f"![{name}]({name})" in markdown


def test_plots_are_valid_pngs(sweep_dir, report):
    assert report["plots"] == ["top1_vs_warmup_fraction.png", "top1_curves.png", "top1_vs_image_samples.png"]
    for name in report["plots"]:
        path = sweep_dir / "report" / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        image = matplotlib.image.imread(path)
        assert image.shape[0] > 100 and image.shape[1] > 100


def test_up_to_20_lines_of_a_plot_get_20_colours():
    """matplotlib's default cycle repeats after 10: a study of 11 cells drew its 1st and 11th alike."""
    from matplotlib.colors import to_hex
    from matplotlib.figure import Figure

    from vitwarm.analysis.plots import line_axes

    ax = line_axes(Figure())
    colours = [to_hex(ax.plot([0, 1], [i, i])[0].get_color()) for i in range(20)]
    assert len(set(colours)) == 20


def test_a_legend_names_an_empty_value_and_keeps_dollar_signs_literal():
    """The second study's legend read "name=, shared_middle=False" for the pico model's empty model name."""
    from vitwarm.analysis.plots import _label

    label = _label({"warmup.model.name": "", "seed": "${seed}"}, ["warmup.model.name", "seed"])
    assert label == r"name='', seed=\${seed}"


def test_cell_keys_without_sweep_json_are_the_varying_config_keys(sweep_dir, tmp_path):
    # Copy the finished runs' files only, without sweep.json: the keys must be found from the configs.
    for run_dir in sweep_dir.iterdir():
        if (run_dir / "config.yaml").exists():
            (tmp_path / run_dir.name).mkdir()
            for f in run_dir.iterdir():
                (tmp_path / run_dir.name / f.name).write_bytes(f.read_bytes())
    results = load_results(tmp_path)
    assert results.cell_keys == ["data.train_fraction", "warmup.fraction"]
    assert len(results.runs) == 12
    assert [name for name, _ in results.unfinished] == ["fraction=0.05__train_fraction=1.0__seed=0"]


def test_each_runs_overrides_are_read_from_its_directory(sweep_dir, tmp_path):
    sweep = shutil.copytree(sweep_dir, tmp_path / "sweep")
    # A later call of the sweep tool listed other runs only: the runs beside them keep their overrides.
    spec = json.loads((sweep / "sweep.json").read_text())
    (sweep / "sweep.json").write_text(json.dumps(spec | {"runs": []}))
    name = "fraction=0.01__train_fraction=0.5__seed=1"
    assert read_overrides(sweep / name) == {"warmup.fraction": "0.01", "data.train_fraction": "0.5", "seed": "1"}
    assert len(load_results(sweep).runs) == 12
    # The run's identity is checked against what its overrides file says it was planned with.
    write_overrides(sweep / name, {"warmup.fraction": "0.01", "data.train_fraction": "0.5", "seed": "2"})
    results = load_results(sweep)
    assert len(results.runs) == 11 and (name, "finished under another config") in results.unfinished


@pytest.mark.slow
def refusal(argv: list[str]) -> list[str]:
    """The lines a refused report command ends with: its main() in this process, which exits with its message
    (``sys.exit(message)``: status 1, the message on stderr; test_report_cli_prints_the_table runs the script)."""
    with pytest.raises(SystemExit) as exit_:
        report_main(argv)
    assert isinstance(exit_.value.code, str), exit_.value.code
    return exit_.value.code.strip().splitlines()


def test_report_cli_prints_the_table(sweep_dir, tmp_path):
    command = [sys.executable, str(REPO / "tools" / "report.py"), str(sweep_dir), "--out", str(tmp_path)]
    out = subprocess.run([*command, "--metric", "top5"], capture_output=True, text=True, check=True).stdout
    assert "| warmup.fraction | data.train_fraction | n | top5 mean ± sd |" in out
    assert (tmp_path / "report.md").exists()


def test_paired_differences_match_hand_computation(sweep_dir, tmp_path):
    # One run moved by +1 point, so that the two seeds' differences differ: against the baseline at data
    # fraction 0.5 (69 / 71), the warm-up cell there scores 72 / 75: differences +3 / +4, mean 3.5, std
    # sqrt(0.5), sem 0.5, t 7. The warm-up cell at 0.25 (63 / 65) differs by -6 on both seeds: std 0, no t.
    sweep = shutil.copytree(sweep_dir, tmp_path / "sweep")
    moved = sweep / "fraction=0.01__train_fraction=0.5__seed=1"
    write_summary(moved, replace(read_summary(moved), top1=75.0))
    report = build_report(sweep, tmp_path / "out", paired_to=["warmup.fraction=0,data.train_fraction=0.5"])
    (block,) = report["paired"]
    assert block["reference"] == {"warmup.fraction": 0.0, "data.train_fraction": 0.5}
    assert len(block["rows"]) == 5  # the other finished cells
    row = find(block["rows"], 0.01, 0.5)
    assert row["seeds"] == [0, 1] and row["differences"] == pytest.approx([3.0, 4.0])
    assert (row["n"], row["mean"], row["std"], row["sem"], row["t"]) == pytest.approx((2, 3.5, 0.5**0.5, 0.5, 7.0))
    flat = find(block["rows"], 0.01, 0.25)
    assert flat["mean"] == pytest.approx(-6.0) and flat["std"] == 0.0 and flat["t"] is None
    # two seeds: one degree of freedom, t_0.975 = 12.71, so t = 7 is not shown
    assert "| 0.01 | 0.5 | 2 | 0–1 | +3.50 | 0.50 | [-2.85, +9.85] | 0.090 | no | +3.00 / +4.00 |" in report["markdown"]
    assert "| 0.01 | 0.25 | 2 | 0–1 | -6.00 | 0.00 | - | - | no | -6.00 / -6.00 |" in report["markdown"]
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text())
    assert on_disk["paired"][0]["rows"][0]["seeds"] == [0, 1]


@pytest.mark.slow
@pytest.mark.parametrize(
    "selection, says",
    [
        ("warmup.fraction=0", "3 cells match; add data.train_fraction to pick one"),
        ("warmup.fraction=0,seed=1", "'seed' is not a cell key (cell keys: warmup.fraction, data.train_fraction)"),
        ("warmup.fraction=0.3,data.train_fraction=1", "no cell has these values (values present: warmup.fraction"),
        ("warmup.fraction", "'warmup.fraction' is not KEY=VALUE"),
    ],
)
def test_paired_to_refuses_a_selection_that_is_not_one_cell(sweep_dir, tmp_path, selection, says):
    lines = refusal([str(sweep_dir), "--out", str(tmp_path / "out"), "--paired-to", selection])
    assert len(lines) == 1 and lines[0].startswith(f"vitwarm: error: --paired-to {selection!r}: "), lines
    assert says in lines[0]
    assert not (tmp_path / "out").exists()  # refused before any file was written


@pytest.mark.parametrize(
    "target, log_x, expected",
    [
        (65.0, False, (15000.0, "=")),
        (65.0, True, (10000 * 2**0.5, "=")),  # halfway in log between 10000 and 20000
        (80.0, False, (40000.0, ">")),
        (50.0, False, (10000.0, "<")),
        (70.0, False, (20000.0, "=")),
    ],
)
def test_invert_curve(target, log_x, expected):
    x, relation = invert_curve([20000, 10000, 40000], [70.0, 60.0, 76.0], target, log_x)
    assert relation == expected[1]
    assert x == pytest.approx(expected[0])


def test_invert_curve_takes_the_first_crossing_of_a_non_monotone_curve():
    assert invert_curve([1, 2, 3, 4], [10.0, 30.0, 20.0, 40.0], 25.0) == (pytest.approx(1.75), "=")


def test_report_refuses_a_sweep_without_finished_runs(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("seed: 0\n")
    sweep = plan_sweep(str(recipe), {"seed": ["0", "1"]}, {}, tmp_path / "sweep")
    write_sweep(sweep)
    write_run(sweep.run_dir(sweep.runs[0]), "0", "1.0", "0")  # interrupted: config.yaml, no summary
    # Finished, but under another seed than its sweep planned for it: not this sweep's run.
    write_run(sweep.run_dir(sweep.runs[1]), "0", "1.0", "1", sweep.identity(sweep.runs[0]))
    lines = refusal([str(sweep.out)])
    assert len(lines) == 1 and lines[0].startswith("vitwarm: error: "), lines
    assert str(sweep.out) in lines[0] and "seed=1 (finished under another config)" in lines[0]
    assert not (sweep.out / "report.md").exists()
