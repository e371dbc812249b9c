"""A study's lines against training-set size (vitwarm.analysis.sizes): the cells' intervals, the paired gains,
the worth in images read off the reference line in log size, and the change in gain with size (Welch)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from vitwarm.analysis.results import CELL_KEY, Cell, RunResult
from vitwarm.analysis.sizes import by_size, train_images
from vitwarm.analysis.tables import size_tables

EPOCHS = {550: 29.0909, 5500: 5.818182}  # 250 and 500 image steps of 64 (the third study's pilot grid)


def cell(name: str, images: int, scores: list[float]) -> Cell:
    """A cell of runs as a study report reads them: each seed's summary (its image phase's planned samples,
    whole steps of 64) and the config it recorded."""
    samples = round(EPOCHS[images] * images / 64) * 64
    runs = [RunResult(name=f"{name}/s{seed}", config={CELL_KEY: name, "seed": seed, "budget.epochs": EPOCHS[images]},
                      summary={"top1": score, "phases": {"image": {"planned_samples": samples}}}, evals=[])
            for seed, score in enumerate(scores)]
    return Cell(values={CELL_KEY: name}, runs=runs)


NONE = {550: [60.0, 61.0, 59.5, 60.5, 61.5], 5500: [70.0, 71.0, 70.5, 69.5, 71.5]}
WARM = {550: [63.0, 63.5, 62.0, 64.5, 63.0], 5500: [70.5, 71.0, 71.5, 69.5, 72.0]}
SPEC = {"reference": "none", "lines": {"none": ["none_550", "none_5500"], "W": ["W_550", "W_5500"]}}


def section():
    cells = [cell(f"{line}_{n}", n, scores[n]) for line, scores in (("none", NONE), ("W", WARM)) for n in (550, 5500)]
    return by_size(SPEC, cells, "top1")


def test_a_cells_size_is_its_split_not_its_image_budget():
    assert [train_images(r) for r in cell("x", 550, [1.0]).runs + cell("y", 5500, [1.0]).runs] == [550, 5500]


def test_each_cell_has_its_mean_and_t_interval_and_each_line_its_paired_gain():
    found, notes = section()
    assert notes == []
    rows = {r["cell"]: r for rows in found["lines"].values() for r in rows}
    small = rows["W_550"]
    half = scipy_stats.t.ppf(0.975, 4) * np.std(WARM[550], ddof=1) / math.sqrt(5)
    assert small["ci"] == pytest.approx([np.mean(WARM[550]) - half, np.mean(WARM[550]) + half])
    reference = scipy_stats.ttest_rel(WARM[550], NONE[550])
    assert small["gain"]["mean"] == pytest.approx(np.mean(WARM[550]) - np.mean(NONE[550]))
    assert small["gain"]["p"] == pytest.approx(reference.pvalue) and small["gain"]["shown"]
    assert "gain" not in rows["none_550"]


def test_the_worth_in_images_is_read_off_the_reference_line_in_log_size():
    found, _ = section()
    small = next(r for r in found["lines"]["W"] if r["images"] == 550)
    # W at 550 images: 63.2; no warm-up goes from 60.5 (550) to 70.5 (5,500), straight in log size
    target, (y0, y1) = np.mean(WARM[550]), (np.mean(NONE[550]), np.mean(NONE[5500]))
    n_star = math.exp(math.log(550) + (target - y0) / (y1 - y0) * (math.log(5500) - math.log(550)))
    worth = small["worth"]
    assert worth["point"]["relation"] == "=" and worth["point"]["n_star"] == pytest.approx(n_star)
    assert worth["point"]["worth"] == pytest.approx(n_star / 550 - 1)
    assert worth["low"]["worth"] <= worth["point"]["worth"] <= worth["high"]["worth"]
    # above the reference's largest size only a bound is given: W at 5,500 (70.9) beats no warm-up's 70.5
    large = next(r for r in found["lines"]["W"] if r["images"] == 5500)["worth"]["point"]
    assert large["relation"] == ">" and large["n_star"] == 5500


def test_the_change_in_gain_with_size_is_welchs_interval_and_the_tables_say_it():
    found, _ = section()
    trend = found["trends"]["W"]
    small = [w - n for w, n in zip(WARM[550], NONE[550])]
    large = [w - n for w, n in zip(WARM[5500], NONE[5500])]
    reference = scipy_stats.ttest_ind(small, large, equal_var=False)
    interval = reference.confidence_interval(0.95)
    assert trend["mean"] == pytest.approx(np.mean(small) - np.mean(large))
    assert trend["ci"] == pytest.approx([interval.low, interval.high]) and trend["p"] == pytest.approx(reference.pvalue)
    text = size_tables(found, "top1")
    assert f"W: gain at 550 images minus gain at 5,500: {trend['mean']:+.2f}" in text
    assert "| W | 550 | 5 | 0–4 | +2.70 [+1.57, +3.83] |" in text and "| W | W_550 | 550 | 5 | 63.20 |" in text


def test_a_line_without_runs_yet_is_a_note_not_an_error():
    cells = [cell("none_550", 550, NONE[550]), cell("none_5500", 5500, NONE[5500]), cell("W_550", 550, WARM[550])]
    found, notes = by_size(SPEC, cells, "top1")
    assert notes == ["by size: W_5500 has no finished run"]
    assert [r["images"] for r in found["lines"]["W"]] == [550] and found["trends"] == {}
