"""The loop (vitwarm.run.engine) run whole in the test's process: the tiny recipe's two phases on generated
images (data.source=synthetic), and a resume from the checkpoint at the boundary between them that
computes exactly what the uninterrupted run computed. Seconds, and no data set needed: the fast lane's
check that a change did not break training."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from helpers import assert_same_weights_and_records, train_here, train_records


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A finished run that keeps every checkpoint (the phase boundary's among them)."""
    run_dir = tmp_path_factory.mktemp("engine") / "reference"
    train_here(run_dir, "checkpoint.keep=100")
    return run_dir


def test_both_phases_train_and_export_on_synthetic_images(reference):
    summary = json.loads((reference / "summary.json").read_text())
    assert summary["synthetic_images"] is True
    assert [p["name"] for p in summary["phases"].values()] == ["warmup", "image"]
    assert summary["image_samples"] == summary["phases"]["image"]["samples"] > 0
    assert summary["warmup_samples"] == summary["phases"]["warmup"]["samples"] > 0
    ends = [r for r in train_records(reference) if r.get("event") == "phase_end"]
    assert [(r["phase"], r["step"]) for r in ends] == [(p["name"], p["steps"]) for p in summary["phases"].values()]
    # The warm-up's export is the image model's start: its blocks, no classifier head.
    warmup, final = (load_file(reference / d / "model.safetensors") for d in ("warmup", "model"))
    assert "head.weight" not in warmup and final["head.weight"].shape == (10, 64)
    assert not torch.equal(warmup["blocks.0.attn.qkv.weight"], final["blocks.0.attn.qkv.weight"])  # trained on


def test_resume_from_the_phase_boundary_is_bitwise(reference, tmp_path, capsys):
    # The run directory as a launch stopped right after the warm-up's phase-end checkpoint left it: that
    # checkpoint, the warm-up's export, the config; later checkpoints, the model and the summary not yet
    # written (metrics.jsonl may hold later records: the checkpoint's record count says where it stood).
    run_dir = tmp_path / "resumed"
    shutil.copytree(reference, run_dir)
    boundary = sorted((run_dir / "checkpoints").glob("0-warmup-*"))[-1]
    for later in sorted((run_dir / "checkpoints").iterdir()):
        if later.name > boundary.name:
            shutil.rmtree(later)
    shutil.rmtree(run_dir / "model")
    (run_dir / "summary.json").unlink()
    train_here(run_dir, "checkpoint.keep=100")
    assert f"resuming from {boundary} (warmup step" in capsys.readouterr().out
    assert_same_weights_and_records(run_dir, reference)
    summaries = [json.loads((d / "summary.json").read_text()) for d in (reference, run_dir)]
    assert [s["top1"] for s in summaries] == [summaries[0]["top1"]] * 2
