"""Speed and averaging options of a run: torch.compile, the optimizer kernel, mixed precision, EMA.

In-process checks build the real phases of tests/tiny.yaml on generated images, as a launch builds them
(preflight, then the data opened); the resume checks are real ``python -m vitwarm.train`` subprocesses on
real Fashion-MNIST shards, killed with SIGKILL and resumed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from safetensors.torch import load_file

from vitwarm.config import load_config
from vitwarm.run.checkpoints import where_to_start
from vitwarm.run.context import open_data
from vitwarm.run.phases import KINDS
from vitwarm.run.phases.common import optimizer_implementation
from vitwarm.run.precision import accelerate_precision
from vitwarm.run.preflight import preflight

from helpers import SYNTHETIC, TINY, kill_once, train, train_records

PER_STEP_LOGS = ("log.every_steps=1",)


def kill_at(run_dir: Path, shards: Path, checkpoint: str, *overrides: str) -> None:
    """Start a run and SIGKILL it as soon as ``checkpoint`` exists."""
    kill_once(run_dir, shards, lambda: (run_dir / "checkpoints" / checkpoint).exists(), *overrides)


def final_checkpoint(run_dir: Path) -> Path:
    return sorted((run_dir / "checkpoints").iterdir())[-1]


def assert_same_tensors(expected: dict, got: dict) -> None:
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


@pytest.fixture
def phases_of(tmp_path):
    """Build the phases of tests/tiny.yaml in this process as a launch does (vitwarm.run.engine.train):
    ``phases_of(*overrides) -> (accelerator, runs)``."""

    def build(*overrides: str):
        cfg = load_config(TINY, [*SYNTHETIC, f"run.dir={tmp_path}", *overrides])
        plan = preflight(cfg, world_size=1)
        accelerator = Accelerator(cpu=True, mixed_precision=accelerate_precision(cfg.precision))
        images = open_data(cfg, plan, accelerator, where_to_start(cfg))
        warmup_phase, image_phase = plan.phases
        warmup = KINDS["warmup"].setup(cfg, warmup_phase, accelerator, images, start_step=0)
        KINDS["warmup"].end(cfg, warmup, accelerator, images)  # the export the image phase starts from
        return accelerator, {"warmup": warmup, "image": KINDS["image"].setup(cfg, image_phase, accelerator, images, 0)}

    yield build
    AcceleratorState._reset_state(reset_partial_state=True)  # the next test may ask for another precision


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_precision_reaches_both_phases(phases_of, precision, dtype):
    _, runs = phases_of(f"precision={precision}")
    for name, run in runs.items():
        seen = []
        block = run.model.vit.blocks[0] if name == "warmup" else run.model.blocks[0]
        hook = block.mlp.fc1.register_forward_hook(lambda module, args, out, seen=seen: seen.append(out.dtype))
        loss, _ = run.loss(run.model, next(run.batches))
        hook.remove()
        assert seen == [dtype], name
        assert loss.dtype == torch.float32, f"{name}: the loss is reduced in fp32 whatever the precision"


def test_adamw_uses_the_fused_kernel_on_cpu_and_cuda(phases_of):
    _, runs = phases_of("train.opt=adamw")
    for run in runs.values():
        assert run.optimizer.defaults["fused"] is True
    assert optimizer_implementation("adamw", torch.device("cuda")) == {"fused": True}
    assert optimizer_implementation("adam", torch.device("mps")) == {"foreach": True}
    assert optimizer_implementation("lamb", torch.device("cuda")) == {}  # timm's own: left to it


def test_ema_lives_on_the_training_device_and_follows_the_model(phases_of):
    accelerator, runs = phases_of("train.ema_decay=0.5")
    run = runs["image"]
    model = accelerator.unwrap_model(run.model)
    assert {p.device for p in run.ema.module.parameters()} == {accelerator.device}
    before = run.ema.module.head.weight.clone()
    loss, _ = run.loss(run.model, next(run.batches))
    accelerator.backward(loss)
    run.optimizer.step()
    run.ema.update(model, step=0)
    # decay 0.5: the average moved exactly half-way to the updated weights
    torch.testing.assert_close(run.ema.module.head.weight, (before + model.head.weight) / 2)


@pytest.mark.slow
def test_ema_weights_resume_exactly_after_sigkill(tmp_path, fmnist_shards):
    ema = ("train.ema_decay=0.9", *PER_STEP_LOGS)
    reference = tmp_path / "reference"
    result = train(reference, fmnist_shards, *ema)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "killed"
    kill_at(run_dir, fmnist_shards, "1-image-00000006", *ema)
    result = train(run_dir, fmnist_shards, "resume=auto", *ema)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from" in result.stdout
    expected, got = final_checkpoint(reference), final_checkpoint(run_dir)
    assert expected.name == got.name
    assert_same_tensors(load_file(expected / "ema.safetensors"), load_file(got / "ema.safetensors"))
    assert_same_tensors(load_file(expected / "model.safetensors"), load_file(got / "model.safetensors"))
    summaries = [json.loads((d / "summary.json").read_text()) for d in (reference, run_dir)]
    assert summaries[0]["ema_top1"] is not None and summaries[0]["ema_top1"] == summaries[1]["ema_top1"]
    # The average is not the model: with decay 0.9 it lags behind the last steps' weights.
    ema_weights, model_weights = (load_file(expected / f) for f in ("ema.safetensors", "model.safetensors"))
    assert not torch.equal(ema_weights["module.head.weight"], model_weights["head.weight"])


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile's inductor backend needs a C++ compiler on a CPU machine; none found")
def test_compiled_run_matches_eager_and_resumes_exactly(tmp_path, fmnist_shards):
    # No drop-path here: compiled code draws its random numbers differently from eager PyTorch, so only
    # a run without randomness inside the model can be compared step by step.
    common = ("model.drop_path_rate=0", *PER_STEP_LOGS)
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    for run_dir, flag in ((eager, "false"), (compiled, "true")):
        result = train(run_dir, fmnist_shards, f"train.compile={flag}", *common)
        assert result.returncode == 0, result.stderr[-3000:]
    eager_records, compiled_records = train_records(eager), train_records(compiled)
    assert [r.get("step") for r in eager_records] == [r.get("step") for r in compiled_records]
    losses = [(a["loss"], b["loss"]) for a, b in zip(eager_records, compiled_records) if "event" not in a]
    assert len(losses) > 50
    # Same arithmetic up to rounding (the measured gap is ~5e-7 relative), so the curves stay together.
    assert [b for _, b in losses] == pytest.approx([a for a, _ in losses], rel=1e-4)

    run_dir = tmp_path / "killed"
    kill_at(run_dir, fmnist_shards, "1-image-00000006", "train.compile=true", *common)
    result = train(run_dir, fmnist_shards, "resume=auto", "train.compile=true", *common)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from" in result.stdout
    assert_same_tensors(load_file(compiled / "model" / "model.safetensors"),
                        load_file(run_dir / "model" / "model.safetensors"))
    assert train_records(run_dir) == compiled_records
