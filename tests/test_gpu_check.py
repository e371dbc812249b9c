"""benchmarks/gpu_check.sh on the CPU: the smoke run goes through every section, and the ways it cannot
proceed each end in one line. Real subprocesses of the script; the Python environments it is pointed at
are real virtual environments (one sees torch but none of vitwarm's other dependencies)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import ROOT

SCRIPT = ROOT / "benchmarks/gpu_check.sh"
# What vitwarm imports beside torch: hidden from the environment that must report them missing.
HIDDEN = ("timm", "webdataset", "omegaconf", "accelerate", "safetensors", "tqdm", "yaml", "_yaml", "pyyaml",
          "huggingface_hub", "vitwarm", "__editable__")


def gpu_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=900)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gpu_check: ")
    return lines[0]


@pytest.fixture(scope="module")
def torch_only_python(tmp_path_factory) -> Path:
    """A venv whose packages are this environment's (pip and torch included) minus vitwarm's other dependencies."""
    root = tmp_path_factory.mktemp("torch_only")
    site = root / "site"
    site.mkdir()
    for entry in Path(torch.__file__).parents[1].iterdir():
        if not entry.name.lower().startswith(HIDDEN) and entry.suffix != ".pth":
            (site / entry.name).symlink_to(entry)
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    venv_site = next((root / "venv").glob("lib/python*/site-packages"))
    (venv_site / "parent.pth").write_text(f"{site}\n")
    return root / "venv" / "bin" / "python"


@pytest.mark.slow
def test_missing_dependencies_without_wheels_are_named(torch_only_python, tmp_path):
    line = one_line_error(gpu_check("--python", str(torch_only_python), "--out", str(tmp_path), "--cpu-smoke"))
    assert line.startswith("gpu_check: cannot proceed: missing timm webdataset omegaconf accelerate")
    assert "pass --wheels DIR" in line


@pytest.mark.slow
def test_wheel_folder_without_the_needed_wheels(torch_only_python, tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    line = one_line_error(gpu_check("--python", str(torch_only_python), "--wheels", str(wheels), "--out",
                                    str(tmp_path / "out"), "--cpu-smoke"))
    assert "pip could not install timm" in line and "satisfies the requirement timm" in line


def test_python_without_torch(tmp_path):
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    line = one_line_error(gpu_check("--python", str(tmp_path / "bare/bin/python"), "--out", str(tmp_path / "o")))
    assert "cannot import torch and torchvision" in line


@pytest.mark.slow
def test_gpu_mode_without_a_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the GPU mode would run for minutes")
    line = one_line_error(gpu_check("--python", sys.executable, "--out", str(tmp_path)))
    assert "no CUDA device visible" in line and "--cpu-smoke" in line


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="the compiled sections need torch.compile's inductor, which needs a C++ compiler here")
def test_cpu_smoke_runs_every_section(tmp_path):
    result = gpu_check("--python", sys.executable, "--out", str(tmp_path), "--cpu-smoke", "--budget-s", "100000")
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    sections = ("environment", "data", "pico 32px eager", "profile", "ema", "sharding", "pico 32px compiled")
    for key in sections:
        assert not {"error", "skipped"} & results[key].keys(), (key, results[key], result.stderr[-3000:])
    assert results["host_syncs"]["skipped"] == "CUDA only"
    assert results["environment"]["torch"] == torch.__version__
    assert results["data"]["images_per_s_per_worker"] > 0
    eager, compiled = results["pico 32px eager"], results["pico 32px compiled"]
    assert eager["plain_img_s"] > 0 and eager["vitwarm_img_s"] > 0 and eager["warmup_seq_s"] > 0
    assert 0 < eager["mfu"] < 1  # of the nominal 1 TFLOP/s the smoke run assumes
    assert compiled["vitwarm_img_s"] > 0 and compiled["recompiles"] >= 0 and compiled["graph_breaks"] >= 0
    assert results["ema"]["ema_device"] == "cpu" and results["ema"]["finite"] is True
    sharded = results["sharding"]["checkpointing on"]  # 2 CPU processes: both modes, from real launches
    assert sharded["ddp"]["processes"] == sharded["fsdp"]["processes"] == 2
    assert sharded["ddp"]["images_per_s"] > 0 and sharded["fsdp"]["training"] > 0 and sharded["ratios"]["step"] > 0
    assert (tmp_path / "trace.json").stat().st_size > 0 and results["profile"]["top"]
    report = (tmp_path / "gpu_check.md").read_text()
    assert "| pico 32px | eager | real loaders" in report and "| pico 32px | compiled |" in report
    assert "per worker" in report and "graph breaks" in report and "top operations" in report
    assert "| fsdp | on |" in report and "| ddp | on |" in report
