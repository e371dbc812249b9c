"""benchmarks/transition.py: a warm-up-only grid that reports steps and FLOPs to the transition and plateau."""

from __future__ import annotations

import importlib.util
import json

import pytest

from helpers import ROOT, TINY


def tool():
    spec = importlib.util.spec_from_file_location("transition", ROOT / "benchmarks" / "transition.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_help():
    with pytest.raises(SystemExit) as exit_:
        tool().main(["--help"])
    assert exit_.value.code == 0


def test_grid_reports_the_transition_and_the_plateau(tmp_path):
    assert tool().main(["--config", str(TINY), "--batch", "32", "--seq-len", "8", "0", "--max-steps", "150",
                        "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "transition.json").read_text())
    assert [(r["batch"], r["seq_len"]) for r in rows] == [(32, 8), (32, 16)]
    for r in rows:
        steps = [s for s, _ in r["curve"]]
        assert steps[0] == 0 and r["curve"][-1][0] == r["plateau_step"] == r["steps_run"]
        assert 0 < r["transition_step"] < r["plateau_step"]  # the tiny k-Dyck task learns within 150 steps
        assert r["plateau_flops"] == r["plateau_step"] * r["flops_per_step"]
    assert rows[0]["flops_per_step"] < rows[1]["flops_per_step"]  # shorter sequences cost less
    assert "| 32 | 8 |" in (tmp_path / "transition.md").read_text()
    assert (tmp_path / "transition.png").stat().st_size > 0
