"""log.trackers: names Accelerate knows, each checked for its package before the run starts."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from vitwarm.config import load_config
from vitwarm.errors import ConfigError
from vitwarm.run.metrics import check_trackers

from helpers import ROOT, TINY


def test_default_needs_no_tracker_package():
    assert load_config(TINY).log.trackers == []
    assert check_trackers([]) == []


def test_installed_tracker_passes():
    pytest.importorskip("tensorboard")
    assert check_trackers(["tensorboard"]) == ["tensorboard"]


def test_unknown_tracker_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown tracker 'tensorbord'; choose from \[.*'tensorboard'.*'wandb'"):
        check_trackers(["tensorbord"])


@pytest.mark.slow
def test_missing_tracker_package_stops_the_run_before_step_one(tmp_path, fmnist_shards):
    missing = next((n for n in ("wandb", "mlflow", "aim") if importlib.util.find_spec(n) is None), None)
    if missing is None:
        pytest.skip("wandb, mlflow and aim are all installed here")
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "vitwarm.train", "--config", str(TINY), f"data.source={fmnist_shards}",
         f"run.dir={run_dir}", f"log.trackers=[{missing}]"],
        cwd=ROOT, env=os.environ | {"OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"vitwarm: error: log.trackers: tracker '{missing}' needs the package '{missing}', which is not installed "
        f"(pip install {missing}), or remove it from log.trackers"]
    assert not (run_dir / "metrics.jsonl").exists() and not (run_dir / "checkpoints").exists()
