"""When the world moves under a run on shared cluster storage: two launchers on one sweep directory.

Real launchers (``python -m vitwarm.cli.sweep --launcher local``) of real trainers (``python -m vitwarm.train``
on tests/tiny.yaml, image phase only), started at once on one sweep directory.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ENV, ROOT, TINY

pytestmark = pytest.mark.slow


def sweep_command(out: Path, shards: Path) -> list[str]:
    return [sys.executable, "-m", "vitwarm.cli.sweep", "--base", str(TINY), "--grid", "seed=0,1",
            "--set", f"data.source={shards}", "--set", "warmup.fraction=0", "--set", "budget.epochs=1",
            "--out", str(out), "--launcher", "local", "--entry", f"{sys.executable} -m vitwarm.train"]


def test_two_launchers_on_one_sweep_share_its_runs_and_each_run_runs_once(tmp_path, fmnist_shards):
    out = tmp_path / "sweep"
    env = ENV | {"PYTHONPATH": str(ROOT)}
    launchers = [subprocess.Popen(sweep_command(out, fmnist_shards), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [launcher.communicate(timeout=600)[0] for launcher in launchers]
    assert [launcher.returncode for launcher in launchers] == [0, 0], outputs
    ran, left = [], []
    for output in outputs:
        summary = re.search(r"sweep .*: (\d+) ran ok, 0 failed, 0 skipped \(already finished\)"
                            r"(?:, (\d+) left to another launcher)?$", output, re.MULTILINE)
        assert summary, output
        ran.append(int(summary[1]))
        left.append(int(summary[2] or 0))
        named = re.findall(r"^  left to another launcher: (seed=\d) \((held by host .*, pid \d+, since .*|finished "
                           r"by another launcher)\)$", output, re.MULTILINE)
        assert len(named) == left[-1], output
    assert [r + n for r, n in zip(ran, left)] == [2, 2] and sum(left) >= 1, outputs
    for seed in (0, 1):
        run_dir = out / f"seed={seed}"
        assert json.loads((run_dir / "summary.json").read_text())["identity"]["seed"] == seed
        steps = [(r["phase"], r["step"]) for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
                 if "loss" in r and "event" not in r]
        assert steps and len(steps) == len(set(steps)), f"records repeated in {run_dir}"  # one set of records
        assert not list(run_dir.glob(".tmp-*")), "a temporary file left behind"
