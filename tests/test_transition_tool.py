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


def test_help_offers_the_grid_and_the_collection(capsys):
    with pytest.raises(SystemExit) as exit_:
        tool().main(["--help"])
    assert exit_.value.code == 0
    shown = capsys.readouterr().out
    # every option the tests below drive the tool with, and nothing before the usage line
    assert shown.startswith("usage: ")
    assert all(flag in shown for flag in ("--config", "--batch", "--seq-len", "--max-steps", "--out", "--collect",
                                          "--cheapest"))


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


def row(batch, seed, plateau_step, flops_per_step=1e9, cpu="cpu A"):
    """A cell's row as the tool writes it (hand-made: collecting runs nothing)."""
    return {"batch": batch, "seq_len": 16, "lr": 0.001, "k": 32, "model": "", "seed": seed, "start_acc": 1.0,
            "transition_step": 20, "transition_flops": 20 * flops_per_step, "plateau_step": plateau_step,
            "plateau_flops": None if plateau_step is None else plateau_step * flops_per_step,
            "plateau_acc": None if plateau_step is None else 70.0, "last_acc": 70.0, "steps_run": 100,
            "wall_s": 1.0, "curve": [[0, 1.0], [20, 30.0], [100, 70.0]], "flops_per_step": flops_per_step,
            "environment": {"cpu": cpu}}


def test_collect_gathers_cells_and_names_the_cheapest_that_learned_in_every_seed(tmp_path, capsys):
    cells = {  # batch 8: cheapest mean, but seed 1 never reached a plateau; batch 16 and 32 learned in both seeds
        "b8_s0": [row(8, 0, 40)], "b8_s1": [row(8, 1, None)],
        "b16_s0": [row(16, 0, 100)], "b16_s1": [row(16, 1, 60)],  # mean 80 steps
        "b32_s0": [row(32, 0, 50)], "b32_s1": [row(32, 1, 90, cpu="cpu B")],  # mean 70 steps: the cheapest
    }
    for name, rows in cells.items():
        (tmp_path / "s0" / name).mkdir(parents=True)
        (tmp_path / "s0" / name / "transition.json").write_text(json.dumps(rows))
    # An earlier collection kept beside the cells holds copies of their rows: not cells of its own.
    (tmp_path / "s0" / ".collect").mkdir()
    (tmp_path / "s0" / ".collect" / "transition.json").write_text(json.dumps(sum(cells.values(), [])))
    out = tmp_path / "table"
    capsys.readouterr()
    assert tool().main(["--collect", str(tmp_path / "s0"), "--out", str(out), "--cheapest", "2"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-2:] == ["32 16 0.001 32 -", "16 16 0.001 32 -"]
    rows = json.loads((out / "transition.json").read_text())
    assert [(r["batch"], r["seed"]) for r in rows] == [(8, 0), (8, 1), (16, 0), (16, 1), (32, 0), (32, 1)]
    assert "2 different machines" in (out / "transition.md").read_text()


def test_cheapest_needs_collect(capsys):
    with pytest.raises(SystemExit) as exit_:
        tool().main(["--cheapest", "2"])
    assert exit_.value.code == 2 and "--collect" in capsys.readouterr().err
