"""A published number is one the archived runs of results/ reproduce.

- Each study's report, rebuilt from its archive (results/<study>/runs) as `vitwarm study FILE report
  --archived` builds it, is the committed results/<study>/report (validation and test top-1), and every
  paired row of it restates a row of the report its page published: the same per-seed differences, and the
  mean, se, 95% interval, p and shown that the one rule (vitwarm.analysis.stats.paired) gives them. The first
  study's pages published two sets: its runs with the same-machine re-runs in their place
  (docs/comparisons/same_machine) and the first runs alone (docs/comparisons, rebuilt with the re-runs'
  superseded runs of results/first/superseded back in place); the growth comparison's page its table.
- Every row of README's results table is the committed report row it names, restated under the one rule.
- Every shipped study file is a valid study (`vitwarm study FILE --dry-run`), and the repository keeps its
  archives in results/: no docs/*/runs folder, no tracked path over 100 characters.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from vitwarm.analysis.report import build_report
from vitwarm.analysis.stats import interval_text, paired
from vitwarm.cli.study import main as study_main
from vitwarm.cli.study import named_results
from vitwarm.sweeps.archive import RUNS
from vitwarm.sweeps.rules import CellResults, apply_rule
from vitwarm.sweeps.study import read_study

from helpers import ROOT, call_main

RESULTS = ROOT / "results"
STUDY2, FIRST = RESULTS / "study2" / "report" / "report.json", RESULTS / "first" / "report" / "report.json"
STUDY3 = RESULTS / "study3" / "report" / "report.json"
# README's claim -> (report, cell, reference): the row of the cell minus its reference, paired by seed
CLAIMS = {
    "W2 − no warm-up, 4 epochs": (STUDY2, "W2_4ep", "none_4ep"),
    "W2 − its compute-matched control, 4 epochs": (STUDY2, "W2_4ep", "W2_4ep_ctl"),
    "W1 − no warm-up, 4 epochs": (STUDY2, "W1_4ep", "none_4ep"),
    "W1 − its compute-matched control, 4 epochs": (STUDY2, "W1_4ep", "W1_4ep_ctl"),
    "W2 − no warm-up, 12 epochs": (STUDY2, "W2_12ep", "none_12ep"),
    "W2 − its compute-matched control, 12 epochs": (STUDY2, "W2_12ep", "W2_12ep_ctl"),
    "W1 − no warm-up, 12 epochs": (STUDY2, "W1_12ep", "none_12ep"),
    "W1 − its compute-matched control, 12 epochs": (STUDY2, "W1_12ep", "W1_12ep_ctl"),
    "16 − 12 image epochs, no warm-up": (STUDY2, "none_16ep", "none_12ep"),
    "mimetic init − no warm-up, 4 epochs": (STUDY2, "mimetic_4ep", "none_4ep"),
    "mimetic init − no warm-up, 12 epochs": (STUDY2, "mimetic_12ep", "none_12ep"),
    "first study: k-Dyck (688 steps) − no warm-up, 4 epochs": (FIRST, "kdyck_4ep", "none_4ep"),
    "first study: k-Dyck − its compute-matched control, 4 epochs": (FIRST, "kdyck_4ep", "kdyck_4ep_ctl"),
    "first study: k-Dyck − no warm-up, 12 epochs": (FIRST, "kdyck_12ep", "none_12ep"),
    "first study: k-Dyck − mimetic init, 12 epochs": (FIRST, "kdyck_12ep", "mimetic_12ep"),
    "third study: mimetic init − no warm-up, 550 images": (STUDY3, "mimetic_550", "none_550"),
    "third study: mimetic init − no warm-up, 5,500 images": (STUDY3, "mimetic_5500", "none_5500"),
}
STATS = ("n", "mean", "sem", "ci", "p", "shown", "seeds")  # what a paired row states


def table_rows(path, header: str) -> list[list[str]]:
    """The body of the markdown table of ``path`` that starts with ``header``: each row's cells, stripped."""
    text = path.read_text()
    lines = text[text.index(header):].split("\n\n")[0].splitlines()[2:]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


def readme_rows() -> dict[str, list[str]]:
    """README's results table: claim (without its parenthesis) -> the other cells of its row."""
    return {re.sub(r" \(.*\)$", "", claim): rest
            for claim, *rest in table_rows(ROOT / "README.md", "| claim | difference [95% interval] |")}


def named_row(report: dict, cell: str, reference: str) -> dict:
    (block,) = [b for b in report["paired"] if b["reference"] == {"cell": reference}]
    (row,) = [r for r in block["rows"] if r["cell"] == cell]
    return row


def test_every_number_of_readmes_results_table_is_its_report_row():
    rows = readme_rows()
    assert set(rows) == set(CLAIMS)
    for claim, (path, cell, reference) in CLAIMS.items():
        row = paired(named_row(json.loads(path.read_text()), cell, reference)["differences"])
        interval, n, shown, _ = rows[claim]
        assert interval == interval_text(row), claim
        assert int(n) == row["n"], claim
        assert shown.split()[0] == ("yes" if row["shown"] else "no"), claim


def test_the_four_epoch_w2_gain_is_not_shown():
    """+2.09 over 5 seeds with se 0.93: t = 2.25, below the 95% bar of 2.78 (it was marked a gain before)."""
    row = named_row(json.loads(STUDY2.read_text()), "W2_4ep", "none_4ep")
    assert row["n"] == 5 and row["mean"] == pytest.approx(2.09, abs=0.005) and row["t"] == pytest.approx(2.25, abs=0.01)
    assert not row["shown"] and row["p"] == pytest.approx(0.087, abs=0.001)


def rebuild(name: str, metric: str, out, superseded: bool = False) -> dict:
    """The study's report from its archive (with ``superseded``: each superseded run in place of its re-run)."""
    study = read_study(ROOT / "studies" / f"{name}.yaml")
    runs = out / "runs"
    for run_dir in (RESULTS / name / "runs").glob("*/s*"):
        older = RESULTS / name / "superseded" / run_dir.relative_to(RESULTS / name / "runs")
        (runs / run_dir.parent.name).mkdir(parents=True, exist_ok=True)
        (runs / run_dir.parent.name / run_dir.name).symlink_to(older if superseded and older.is_dir() else run_dir)
    results = named_results(study, runs, archived=True)
    return build_report(runs, out / "report", metric, results=results, pairs=study.compare, sizes=study.by_size)


def rounded(row: dict) -> dict:
    return {k: [round(v, 6) for v in row[k]] if isinstance(row[k], list) else round(row[k], 6)
            if isinstance(row[k], float) else row[k] for k in STATS}


def published_rows(report: dict, rebuilt: dict) -> dict[tuple[str, str], list[float]]:
    """(cell, reference) -> the per-seed differences of each paired row of a published report, its cells named
    as the rebuilt report names them (the cell of the same runs: the same n, mean and sd)."""
    def numbers(cell):
        return cell["n"], round(cell["mean"], 6), round(cell["std"], 6)

    names = {numbers(c): c["cell"] for c in rebuilt["cells"]}
    assert sorted(map(numbers, report["cells"])) == sorted(names)  # every cell, the same runs
    keys = report["cell_keys"]
    rows = {}
    for block in report["paired"]:
        (reference,) = [c for c in report["cells"] if all(c[k] == v for k, v in block["reference"].items())]
        for row in block["rows"]:
            (cell,) = [c for c in report["cells"] if all(c[k] == row[k] for k in keys)]
            rows[names[numbers(cell)], names[numbers(reference)]] = row
    return rows


def check_against(rebuilt: dict, published: dict) -> None:
    """Every rebuilt paired row is a published row (or its negation), restated under the one rule."""
    rows = published_rows(published, rebuilt)
    for block in rebuilt["paired"]:
        for row in block["rows"]:
            pair = (row["cell"], block["reference"]["cell"])
            sign = 1 if pair in rows else -1
            old = rows[pair] if sign == 1 else rows[pair[::-1]]
            assert row["seeds"] == old["seeds"], pair
            assert [round(d, 9) for d in row["differences"]] == [round(sign * d, 9) for d in old["differences"]], pair
            assert rounded(row) == rounded(paired(row["differences"]) | {"seeds": row["seeds"]}), pair
            if "ci" in old:  # reports of the one rule state it: the same numbers
                assert rounded(row) == rounded({**old, "ci": sorted(sign * c for c in old["ci"]),
                                                "mean": sign * old["mean"]}), pair


@pytest.mark.slow
@pytest.mark.parametrize("name, published", [("study2", "docs/study2/report"),
                                             ("first", "docs/comparisons/same_machine"),
                                             ("study3", None)])  # its page states rows of the committed one
def test_a_studys_report_rebuilt_from_its_archive_is_the_committed_and_the_published_one(name, published, tmp_path):
    for metric, split in (("top1", "."), ("test_top1", "test")):
        rebuilt = rebuild(name, metric, tmp_path / metric)
        committed = json.loads((RESULTS / name / "report" / ("." if metric == "top1" else metric) /
                                "report.json").read_text())
        assert rebuilt["unfinished"] == [] and {k: v for k, v in rebuilt.items() if k != "markdown"} == committed
        if published:
            check_against(rebuilt, json.loads((ROOT / published / split / "report.json").read_text()))


@pytest.mark.slow
def test_the_first_studys_runs_of_two_machines_give_its_first_report(tmp_path):
    rebuilt = rebuild("first", "top1", tmp_path, superseded=True)
    check_against(rebuilt, json.loads((ROOT / "docs" / "comparisons" / "report.json").read_text()))


def test_the_growth_pages_table_is_its_archives_report(tmp_path):
    """docs/models.md's paired table: mean ± se, validation and test, and the per-seed validation differences."""
    table = table_rows(ROOT / "docs" / "models.md", "| difference | validation | test |")
    cells = {"grown core": "core", "no warm-up": "none", "full size, same FLOPs": "full_same_flops"}
    reports = {m: rebuild("growth", m, tmp_path / m) for m in ("top1", "test_top1")}
    for row in table:
        label, val, test, per_seed = [c.replace("−", "-") for c in row]
        cell, reference = (cells[side.strip()] for side in label.split(" - "))
        for metric, stated in (("top1", val), ("test_top1", test)):
            row = named_row(reports[metric], cell, reference)
            assert stated == f"{row['mean']:+.2f} ± {row['sem']:.2f}", (label, metric)
        assert per_seed == ", ".join(f"{d:+.2f}" for d in named_row(reports["top1"], cell, reference)["differences"])


@pytest.mark.parametrize("name", ["first", "growth", "study2"])
def test_every_shipped_study_file_plans_its_runs(name):
    status, output = call_main(study_main, [str(ROOT / "studies" / f"{name}.yaml"), "--dry-run"])
    assert status == 0, output[-2000:]
    study = read_study(ROOT / "studies" / f"{name}.yaml")
    planned = re.findall(r"^  [a-z ]+ +(\S+/s\d+) ", output, flags=re.M)  # one line per run: state, name, command
    assert sorted(planned) == sorted(f"{c}/s{s}" for c, cell in study.cells.items() for s in cell.seeds)


def test_the_third_study_runs_its_pilot_before_any_size(tmp_path, monkeypatch):
    """Its sizes' budgets are the pilot's choice: before the pilot has run, only the pilot's runs are planned."""
    monkeypatch.chdir(tmp_path)  # no runs of the study here
    status, output = call_main(study_main, [str(ROOT / "studies" / "study3.yaml"), "--dry-run"])
    assert status == 0, output[-2000:]
    study = read_study(ROOT / "studies" / "study3.yaml")
    planned = re.findall(r"^  new +(\S+/s\d+) ", output, flags=re.M)
    pilot = study.stage("pilot").cells
    assert sorted(planned) == sorted(f"{c}/s{s}" for c in pilot for s in study.cells[c].seeds) and len(planned) == 24
    for stage in ("n550", "n1100", "n2200", "n5500"):
        assert f"stage {stage}: waits (" in output and "run stage pilot first" in output


def test_the_third_studys_pilot_and_its_choice_are_its_archives(tmp_path):
    """docs/study3.md's pilot table (each grid cell's validation top-1 over seeds 0-1, mean and per seed) and the
    budget the pilot's rule chose at each size, from results/study3."""
    study = read_study(ROOT / "studies" / "study3.yaml")
    pilot = study.stage("pilot")
    runs = {c: [json.loads((RESULTS / "study3" / RUNS / c / f"s{s}" / "summary.json").read_text())
                for s in study.cells[c].seeds] for c in pilot.cells}
    table = table_rows(ROOT / "docs" / "study3.md", "| cell | images | image steps | epochs |")
    assert len(table) == len(pilot.cells)
    for cell, _images, steps, _epochs, mean, per_seed, _chosen in table:
        scores = [r["top1"] for r in runs[cell]]
        assert mean == f"{sum(scores) / len(scores):.2f}" and per_seed == " / ".join(f"{x:.2f}" for x in scores), cell
        assert steps == f"{runs[cell][0]['phases']['image']['steps']:,}", cell
    chosen = apply_rule(pilot.choose, {c: CellResults(study.overrides(c, {}), runs[c]) for c in pilot.cells})
    stated = {row[0] for row in table if row[-1] == "chosen"}
    assert stated == set(chosen.values())


def test_the_third_studys_gains_are_its_archives():
    """Every row of docs/study3.md's gains table (a paired difference at one size, validation and test) is the
    row of the report rebuilt from results/study3, restated under the one rule."""
    table = table_rows(ROOT / "docs" / "study3.md", "| size | difference | n | validation")
    reports = [json.loads((RESULTS / "study3" / "report" / sub / "report.json").read_text())
               for sub in ("", "test_top1")]
    assert table
    for size, difference, n, *stated in table:
        cell, reference = (f"{name}_{size.replace(',', '')}" for name in difference.split(" − "))
        for report, (interval, shown) in zip(reports, [stated[:2], stated[2:]]):
            row = paired(named_row(report, cell, reference)["differences"])
            expected = (interval_text(row), "yes" if row["shown"] else "no", row["n"])
            assert (interval, shown, int(n)) == expected, (size, difference)


def test_the_third_studys_fifth_part_on_two_machines_is_its_archive():
    """docs/study3.md's table of part 5's runs of the first machine (results/study3/superseded) against their
    re-runs on the second (results/study3/runs): each run's validation top-1 and the machine it records."""
    table = table_rows(ROOT / "docs" / "study3.md", "| run | first machine | second machine | difference |")
    superseded = sorted(f"{d.parent.name}/{d.name}" for d in (RESULTS / "study3" / "superseded").glob("*/s*"))
    assert sorted(row[0] for row in table) == superseded and superseded
    for run, first, second, difference in table:
        old, new = (json.loads((RESULTS / "study3" / where / run / "summary.json").read_text())
                    for where in ("superseded", RUNS))
        assert (first, second) == (f"{old['top1']:.2f}", f"{new['top1']:.2f}"), run
        assert difference == f"{new['top1'] - old['top1']:+.2f}" and old["identity"] == new["identity"], run
        machines = [r["environment"]["machine"]["fingerprint"] for r in (old, new)]
        assert machines == ["3206e714d419c0f8", "473ce3fadb8abf91"], run


def test_archives_are_in_results_and_no_path_is_long():
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    paths = listed.stdout.splitlines()
    assert [p for p in paths if len(p) > 100] == []
    assert [p for p in paths if re.match(r"docs/(.+/)?runs/", p)] == []
    assert {p.split("/")[1] for p in paths if p.startswith("results/")} >= {"first", "growth", "study2", "study3"}
