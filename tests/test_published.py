"""A published number is one the archived runs reproduce: the second study's report, rebuilt from the runs
archived in docs/study2/runs by the study's own command, gives the committed report's numbers.

The committed report was made from the sweep directory (with its sweep.json); the archive has the runs'
own files only, so its cell keys are found from the configs and the tables' columns differ. The numbers
are compared: every cell's runs and mean, every paired row, every data-equivalence estimate and every row of
the gain against warm-up share.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT


def numbers(report: dict) -> dict:
    """What the study's page quotes from a report.json, independent of the cell keys' names and order."""
    return {
        "cells": sorted((c["n"], round(c["mean"], 6), tuple(sorted(c["runs"]))) for c in report["cells"]),
        "paired": [sorted((tuple(r["seeds"]), round(r["mean"], 6), r["sem"] and round(r["sem"], 6))
                          for r in p["rows"] if r.get("n")) for p in report["paired"]],
        "data_equivalence": sorted((tuple(d["seeds"]), round(d["metric"], 6), d["point"]["relation"],
                                    round(d["point"]["s_star"], 3)) for d in report["data_equivalence"]),
        "gain_vs_share": sorted((round(r["share"], 9), round(r["gain"]["mean"], 6),
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
