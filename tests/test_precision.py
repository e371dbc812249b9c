"""One source of truth for precision (the recipe's), refused in one line when a launch disagrees; TF32 for
fp32 on CUDA (vitwarm.run.precision)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from vitwarm.run.precision import LAUNCH_ENV, check_launch_precision, use_tf32

from helpers import ENV, ROOT, TINY, train_in_process


def test_a_launch_that_disagrees_with_the_recipe_is_refused_before_step_1(tmp_path, fmnist_shards, monkeypatch):
    monkeypatch.setenv(LAUNCH_ENV, "bf16")  # what accelerate launch hands its processes
    status, output = train_in_process(tmp_path / "run", fmnist_shards, "precision=fp32")
    errors = [line for line in output.splitlines() if line.startswith("vitwarm: error:")]
    assert status == 1 and len(errors) == 1, output[-3000:]
    assert "precision=fp32" in errors[0] and "mixed_precision=bf16" in errors[0]
    assert not (tmp_path / "run").exists()
    # Agreement, or a launch that leaves precision to the recipe ('no', accelerate's default), passes.
    check_launch_precision("bf16")
    monkeypatch.setenv(LAUNCH_ENV, "no")
    check_launch_precision("bf16")


@pytest.mark.slow
def test_accelerate_launch_with_another_mixed_precision_is_refused(tmp_path, fmnist_shards):
    """The same through a real ``accelerate launch --mixed_precision bf16`` of an fp32 recipe."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / "recipes/accelerate/cpu.yaml"), "--mixed_precision", "bf16", "-m", "vitwarm.train",
               "--config", str(TINY), f"data.source={fmnist_shards}", f"run.dir={tmp_path / 'run'}", "precision=fp32"]
    result = subprocess.run(command, cwd=ROOT, env=ENV | {"PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                            timeout=300)
    errors = [line for line in result.stderr.splitlines() if line.startswith("vitwarm: error:")]
    assert result.returncode != 0 and len(errors) == 1, result.stderr[-3000:]
    assert "mixed_precision=bf16" in errors[0]
    assert not (tmp_path / "run").exists()


def test_fp32_on_cuda_uses_tf32_and_says_so():
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert use_tf32("fp32", torch.device("cpu")) is None and use_tf32("bf16", torch.device("cuda")) is None
        assert torch.get_float32_matmul_precision() == "highest"  # CPU runs and mixed precision: untouched
        warning = use_tf32("fp32", torch.device("cuda"))
        assert torch.get_float32_matmul_precision() == "high"  # TF32 matmuls
        assert warning.startswith("vitwarm: warning: precision=fp32") and "\n" not in warning
    finally:
        torch.set_float32_matmul_precision(before)
