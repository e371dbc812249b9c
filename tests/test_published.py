"""A published number is one the archived runs reproduce.

- The second study's report, rebuilt from the runs archived in docs/study2/runs by the study's own command,
  gives the committed report's numbers (every cell's runs and mean, every paired row with its interval and
  p, every data-equivalence estimate and every row of the gain against warm-up share).
- Every row of README's results table is the report row it names, restated under the one rule
  (vitwarm.analysis.stats): the mean difference, its 95% t-interval, n and whether it is shown.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from vitwarm.analysis.stats import interval_text, paired

from helpers import ROOT

STUDY2 = ROOT / "docs" / "study2" / "report" / "report.json"
FIRST = ROOT / "docs" / "comparisons" / "same_machine" / "report.json"  # the first study's one-machine set
NONE = {"budget.regime": "additive", "model.init": "default", "warmup.fraction": 0.0}
W1 = {"budget.regime": "additive", "warmup.model.shared_middle": True}
W2 = {"budget.regime": "additive", "warmup.model.shared_middle": False, "warmup.batch_size": 8}
KDYCK = {"budget.regime": "additive", "model.init": "default", "procedural.grammar": "k_dyck",
         "procedural.shuffled": False, "transfer.sources": "{}"}


def ref(epochs: int, rest: str) -> str:
    return f"budget.epochs={epochs},{rest}"


NONE_REF = "budget.regime=additive,model.init=default,warmup.fraction=0"
# README's claim -> (report, the reference cell's selection, the keys of the row's cell)
CLAIMS = {
    "W2 − no warm-up, 4 epochs": (STUDY2, ref(4, NONE_REF), {"budget.epochs": 4.0, **W2}),
    "W2 − its compute-matched control, 4 epochs": (
        STUDY2, ref(4, "budget.regime=compute_matched,warmup.model.shared_middle=false"), {"budget.epochs": 4.0, **W2}),
    "W1 − no warm-up, 4 epochs": (STUDY2, ref(4, NONE_REF), {"budget.epochs": 4.0, **W1}),
    "W1 − its compute-matched control, 4 epochs": (
        STUDY2, ref(4, "budget.regime=compute_matched,warmup.model.shared_middle=true"), {"budget.epochs": 4.0, **W1}),
    "W2 − no warm-up, 12 epochs": (STUDY2, ref(12, NONE_REF), {"budget.epochs": 12.0, **W2}),
    "W2 − its compute-matched control, 12 epochs": (
        STUDY2, ref(12, "budget.regime=compute_matched,warmup.model.shared_middle=false"),
        {"budget.epochs": 12.0, **W2}),
    "W1 − no warm-up, 12 epochs": (STUDY2, ref(12, NONE_REF), {"budget.epochs": 12.0, **W1}),
    "W1 − its compute-matched control, 12 epochs": (
        STUDY2, ref(12, "budget.regime=compute_matched,warmup.model.shared_middle=true"),
        {"budget.epochs": 12.0, **W1}),
    "16 − 12 image epochs, no warm-up": (STUDY2, ref(12, NONE_REF), {"budget.epochs": 16.0, **NONE}),
    "mimetic init − no warm-up, 4 epochs": (STUDY2, ref(4, NONE_REF), {"budget.epochs": 4.0, **NONE,
                                                                       "model.init": "mimetic"}),
    "mimetic init − no warm-up, 12 epochs": (STUDY2, ref(12, NONE_REF), {"budget.epochs": 12.0, **NONE,
                                                                         "model.init": "mimetic"}),
    "first study: k-Dyck (688 steps) − no warm-up, 4 epochs": (
        FIRST, ref(4, NONE_REF), {"budget.epochs": 4.0, "warmup.fraction": 1.0, **KDYCK}),
    "first study: k-Dyck − its compute-matched control, 4 epochs": (
        FIRST, ref(4, "budget.regime=additive,model.init=default,warmup.fraction=1.0,procedural.grammar=k_dyck,"
                      "procedural.shuffled=false,transfer.sources={}"),
        {"budget.epochs": 4.0, "budget.regime": "compute_matched"}),
    "first study: k-Dyck − no warm-up, 12 epochs": (
        FIRST, ref(12, NONE_REF), {"budget.epochs": 12.0, "warmup.fraction": 0.3333, **KDYCK}),
    "first study: k-Dyck − mimetic init, 12 epochs": (
        FIRST, ref(12, "budget.regime=additive,model.init=mimetic,warmup.fraction=0"),
        {"budget.epochs": 12.0, "warmup.fraction": 0.3333, **KDYCK}),
}
# A claim whose row is the reference minus the named cell (the table states it the other way round).
REVERSED = {"first study: k-Dyck − its compute-matched control, 4 epochs"}


def readme_rows() -> dict[str, list[str]]:
    """README's results table: claim (without its parenthesis) -> the other cells of its row."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| claim | difference [95% interval] |"):].split("\n\n")[0].splitlines()[2:]
    rows = {}
    for line in table:
        claim, *rest = [c.strip() for c in line.strip("|").split("|")]
        rows[re.sub(r" \(.*\)$", "", claim)] = rest
    return rows


def report_row(report: dict, selection: str, keys: dict) -> dict:
    (block,) = [b for b in report["paired"] if b["selection"] == selection]
    found = [r for r in block["rows"] if all(r.get(k) == v for k, v in keys.items())]
    assert len(found) == 1, (selection, keys, len(found))
    return found[0]


def test_every_number_of_readmes_results_table_is_its_report_row():
    rows = readme_rows()
    assert set(rows) == set(CLAIMS)
    for claim, (path, selection, keys) in CLAIMS.items():
        differences = report_row(json.loads(path.read_text()), selection, keys)["differences"]
        row = paired([-d for d in differences] if claim in REVERSED else differences)
        interval, n, shown, _ = rows[claim]
        assert interval == interval_text(row), claim
        assert int(n) == row["n"], claim
        assert shown.split()[0] == ("yes" if row["shown"] else "no"), claim


def test_the_four_epoch_w2_gain_is_not_shown():
    """+2.09 over 5 seeds with se 0.93: t = 2.25, below the 95% bar of 2.78 (it was marked a gain before)."""
    row = report_row(json.loads(STUDY2.read_text()), ref(4, NONE_REF), {"budget.epochs": 4.0, **W2})
    assert row["n"] == 5 and row["mean"] == pytest.approx(2.09, abs=0.005) and row["t"] == pytest.approx(2.25, abs=0.01)
    assert not row["shown"] and row["p"] == pytest.approx(0.087, abs=0.001)


def numbers(report: dict) -> dict:
    """What the study's page quotes from a report.json, independent of the cell keys' names and order."""
    def rounded(values):
        return values and tuple(round(v, 6) for v in values)

    return {
        "cells": sorted((c["n"], round(c["mean"], 6), tuple(sorted(c["runs"]))) for c in report["cells"]),
        "paired": [sorted((tuple(r["seeds"]), round(r["mean"], 6), r["sem"] and round(r["sem"], 6),
                           rounded(r["ci"]), r["p"] and round(r["p"], 6), r["shown"])
                          for r in p["rows"] if r.get("n")) for p in report["paired"]],
        "data_equivalence": sorted((tuple(d["seeds"]), round(d["metric"], 6), d["point"]["relation"],
                                    round(d["point"]["s_star"], 3), round(d["low"]["s_star"], 3),
                                    round(d["high"]["s_star"], 3)) for d in report["data_equivalence"]),
        "gain_vs_share": sorted((round(r["share"], 9), round(r["gain"]["mean"], 6), rounded(r["gain"]["ci"]),
                                 r["images_gain"] and round(r["images_gain"], 6))
                                for r in report["gain_vs_share"]["rows"]),
    }


@pytest.mark.slow
def test_the_second_studys_report_is_what_its_archived_runs_give(tmp_path):
    (tmp_path / "images").symlink_to(ROOT / "docs" / "study2" / "runs")  # the tool reads OUT/images
    env = os.environ | {"OUT": str(tmp_path), "DOCS": str(tmp_path / "docs"), "PY": sys.executable}
    done = subprocess.run(["bash", "tools/study2.sh", "report"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for split in (".", "test"):  # validation top-1, and test top-1 beside it
        rebuilt = json.loads((tmp_path / "docs" / "report" / split / "report.json").read_text())
        published = json.loads((ROOT / "docs" / "study2" / "report" / split / "report.json").read_text())
        assert rebuilt["unfinished"] == [] and len(rebuilt["cells"]) == 14
        assert numbers(rebuilt) == numbers(published)
