"""benchmarks/e2e.py runs both phases' comparisons on real Fashion-MNIST shards and reports them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import ROOT

pytestmark = pytest.mark.slow  # runs the benchmark script in processes of its own


def test_e2e_benchmark_compares_both_phases(tmp_path, fmnist_shards):
    out = tmp_path / "e2e.json"
    result = subprocess.run(
        [sys.executable, "benchmarks/e2e.py", "--recipe", "tests/tiny.yaml", "--shards", str(fmnist_shards),
         "--steps", "3", "--warm-steps", "1", "--rounds", "2", "--threads", "1", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(out.read_text())
    assert set(results) == {"image", "warmup"}
    for phase in results.values():
        assert len(phase["rounds"]) == 2
        assert phase["plain_per_s"] > 0 and phase["vitwarm_per_s"] > 0
        assert phase["ratio_min"] <= phase["ratio"] <= phase["ratio_max"]
    assert "ratio vitwarm / plain" in result.stdout


def test_e2e_refuses_more_steps_than_an_epoch(tmp_path, fmnist_shards):
    result = subprocess.run(
        [sys.executable, "benchmarks/e2e.py", "--recipe", "tests/tiny.yaml", "--shards", str(fmnist_shards),
         "--steps", "500", "--phases", "image"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "e2e: error: --steps 500 needs 502 batches in one epoch, the shards give 31: use fewer steps or more data"]
