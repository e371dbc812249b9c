"""End-to-end runs of vitwarm.train on real Fashion-MNIST shards: both phases, DDP, kill/resume, NaN guard.

Every run is a real subprocess (`python -m vitwarm.train` or `accelerate launch`) on tests/tiny.yaml.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import timm
import torch
from safetensors.torch import load_file

from helpers import (
    ENV,
    PER_STEP_LOGS,
    ROOT,
    STOCK_EVAL,
    free_port,
    kill_once,
    train,
    train_command,
    train_in_process,
    train_records,
)

pytestmark = pytest.mark.slow  # every test trains in processes of its own


@pytest.fixture(scope="module")
def reference(tmp_path_factory, fmnist_shards):
    """One uninterrupted single-process run, the yardstick of the resume tests."""
    run_dir = tmp_path_factory.mktemp("reference")
    result = train(run_dir, fmnist_shards, *PER_STEP_LOGS)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_run_completes_both_phases(reference):
    summary = json.loads((reference / "summary.json").read_text())
    assert summary["phases"]["warmup"]["steps"] > 0 and summary["phases"]["image"]["steps"] > 0
    assert summary["warmup_samples"] == summary["phases"]["warmup"]["samples"]
    # Chance is 10%: even this tiny model learns something in one epoch of 2k images.
    assert summary["top1"] > 30
    records = train_records(reference)
    assert {r["phase"] for r in records} == {"warmup", "image"}
    assert any(r.get("event") == "eval" for r in records)
    for name in ("config.yaml", "warmup/model.safetensors", "model/model.safetensors", "model/config.json"):
        assert (reference / name).is_file(), name
    # Where the numbers came from: the same run moves by tenths of a point between CPUs.
    env = summary["environment"]
    assert (env["torch"], env["timm"], env["device"], env["num_processes"]) == (
        torch.__version__, timm.__version__, "cpu", 1)
    assert env["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability() and env["cpu"]
    # ...and which code on which machine: this checkout's commit (git's own answer) and a host fingerprint
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout (CI clones one); an unpacked source tree records the version only
        assert env["source"]["commit"] == head.stdout.strip() and isinstance(env["source"]["modified"], bool)
    assert re.fullmatch(r"[0-9a-f]{16}", env["machine"]["fingerprint"])
    assert summary["schema_version"] == 1
    assert env["machine"]["cpu"] == env["cpu"] and env["machine"]["memory_bytes"] > 2**30


@pytest.mark.parametrize("kill_at", ["during warm-up", "at the phase boundary", "during the image phase"])
def test_killed_run_resumes_to_identical_weights(tmp_path, fmnist_shards, reference, kill_at):
    warm_steps = json.loads((reference / "summary.json").read_text())["phases"]["warmup"]["steps"]
    checkpoint = {"during warm-up": "0-warmup-00000003",
                  "at the phase boundary": f"0-warmup-{warm_steps:08d}",
                  "during the image phase": "1-image-00000006"}[kill_at]
    run_dir = tmp_path / "run"
    kill_once(run_dir, fmnist_shards, lambda: (run_dir / "checkpoints" / checkpoint).exists(), *PER_STEP_LOGS)

    result = train(run_dir, fmnist_shards, "resume=auto", *PER_STEP_LOGS)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from" in result.stdout
    # Bitwise: resumed runs re-seed every step and restart every stream at its sample index.
    expected, got = load_file(reference / "model/model.safetensors"), load_file(run_dir / "model/model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        assert (expected[name] == got[name]).all(), name
    # No sample lost or repeated: the logged losses (averages over the very same batches) are identical.
    assert train_records(run_dir) == train_records(reference)


def test_two_process_accelerate_launch(tmp_path, fmnist_shards):
    run_dir = tmp_path / "ddp"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / "recipes/accelerate/cpu_ddp.yaml"), "--main_process_port", str(free_port()),
               *train_command(run_dir, fmnist_shards, "log.trackers=[tensorboard]")[1:]]
    result = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["environment"]["num_processes"] == 2
    assert summary["phases"]["warmup"]["steps"] > 0 and summary["phases"]["image"]["steps"] > 0
    info = json.loads((fmnist_shards / "_info.json").read_text())
    evals = [r for r in train_records(run_dir) if r.get("event") == "eval"]
    # Validation counted every sample exactly once over both processes.
    assert all(r["samples"] == info["splits"]["validation"]["num_samples"] for r in evals)
    assert list((run_dir / "vitwarm").rglob("events.out.tfevents.*")), "no TensorBoard events written"


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, fmnist_shards):
    run_dir = tmp_path / "nan"
    result = train(run_dir, fmnist_shards, "warmup.lr=1e30", "warmup.grad_clip=0", "checkpoint.every_steps=1")
    assert result.returncode != 0
    assert "loss is nan" in result.stderr or "loss is inf" in result.stderr, result.stderr[-2000:]
    checkpoints = sorted((run_dir / "checkpoints").iterdir())
    assert checkpoints, "the last good checkpoint is gone"
    state = json.loads((checkpoints[-1] / "state.json").read_text())
    tensors = load_file(checkpoints[-1] / "model.safetensors")
    assert all(t.isfinite().all() for t in tensors.values()), f"checkpoint at step {state['step']} holds NaN"


def test_checkpoint_of_another_model_is_refused(tmp_path, fmnist_shards, reference):
    # Refusals before step 1: the trainer's main() in this process (a trainer process mostly imports torch).
    last = sorted((reference / "checkpoints").iterdir())[-1]
    status, out = train_in_process(tmp_path / "a", fmnist_shards, f"resume={last}", "model.kwargs.depth=3")
    assert status == 1 and "belongs to a run with other settings: model.kwargs.depth: 2 -> 3" in out
    # Even when the change is declared deliberate, weights that do not fit are never loaded.
    status, out = train_in_process(tmp_path / "a", fmnist_shards, f"resume={last}", "model.kwargs.depth=3",
                                   "resume_allow_changed=[model.kwargs.depth]")
    assert status == 1 and "does not fit this model" in out and "blocks.2" in out
    status, out = train_in_process(tmp_path / "b", fmnist_shards, f"resume={last}", "model.name=vitwarm_pico_patch4_32")
    assert status == 1 and "is of model vitwarm_pico_patch7_28, but model.name=vitwarm_pico_patch4_32" in out


def test_resume_never_refuses_an_existing_run(fmnist_shards, reference):
    status, out = train_in_process(reference, fmnist_shards, "resume=never")
    assert status == 1 and "resume=never but" in out


def test_odd_token_grid_is_refused_before_training(tmp_path, fmnist_shards):
    # 21 px / patch 7 = 3 x 3 = 9 tokens: no balanced bracket sequence has odd length.
    status, out = train_in_process(tmp_path / "odd", fmnist_shards, "model.kwargs.img_size=21")
    assert status == 1 and "3 x 3 = 9 token grid of model vitwarm_pico_patch7_28: seq_len must be even" in out


def test_exports_load_in_stock_timm_without_vitwarm(tmp_path, fmnist_shards, reference):
    model_dir = reference / "model"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architecture"] == "vit_tiny_patch16_224"  # a stock name: no vitwarm import needed
    assert config["num_classes"] == 10 and config["vitwarm"]["kind"] == "model"
    warm = json.loads((reference / "warmup" / "config.json").read_text())
    assert warm["num_classes"] == 0 and "head: none" in warm["pretrained_cfg"]["notes"][0]
    # The final model's head is in the file and is the trained one of the last checkpoint.
    final = load_file(model_dir / "model.safetensors")
    last = load_file(sorted((reference / "checkpoints").iterdir())[-1] / "model.safetensors")
    assert final["head.weight"].shape == (10, 64) and (final["head.weight"] == last["head.weight"]).all()
    assert "head.weight" not in load_file(reference / "warmup" / "model.safetensors")

    # A fresh interpreter outside the project: sys.path[0] is tmp_path, and vitwarm is never imported.
    result = subprocess.run([sys.executable, "-c", STOCK_EVAL, str(model_dir), str(fmnist_shards)], cwd=tmp_path,
                            env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.splitlines()[-1])
    summary = json.loads((reference / "summary.json").read_text())
    assert not got["vitwarm_imported"]
    assert got["samples"] == 500 and abs(got["top1"] - summary["top1"]) <= 0.1, (got["top1"], summary["top1"])
    assert got["config"]["input_size"] == [1, 28, 28] and got["config"]["mean"] == [0.286]
    assert got["label_names"][0] == "T-shirt/top" and got["headless_classes"] == 7


def test_fine_tuning_starts_from_an_export(tmp_path, fmnist_shards, reference):
    # With a zero learning rate nothing moves: the final blocks are the exported ones, the head is fresh.
    result = train(tmp_path / "ft", fmnist_shards, f"model.finetune={reference / 'model'}", "warmup.fraction=0",
                   "train.lr=0", "train.min_lr=0", "model.drop_path_rate=0", "budget.epochs=0.25")
    assert result.returncode == 0, result.stderr[-3000:]
    start, end = load_file(reference / "model/model.safetensors"), load_file(tmp_path / "ft/model/model.safetensors")
    assert all((start[n] == end[n]).all() for n in start if not n.startswith("head.")), "blocks moved"
    assert not (start["head.weight"] == end["head.weight"]).all()
    refused = train(tmp_path / "bad", fmnist_shards, f"model.finetune={reference / 'model'}")
    assert "model.finetune=" in refused.stderr and "warmup.fraction=0 (got 0.2)" in refused.stderr
    missing = train(tmp_path / "none", fmnist_shards, f"model.finetune={tmp_path / 'nowhere'}", "warmup.fraction=0")
    assert missing.stderr.strip().splitlines()[-1] == (f"vitwarm: error: no exported weights at {tmp_path}/nowhere "
                                                       "(expected an export folder or a safetensors file)")


def test_a_checkpoint_cadence_in_minutes_saves_at_log_steps(tmp_path, fmnist_shards):
    """checkpoint.every_minutes: once the minutes have passed (here at once), the next sync (a log step or an
    evaluation) saves, in every phase, besides the step cadence (here never) and the phase ends."""
    run_dir = tmp_path / "run"
    result = train(run_dir, fmnist_shards, "checkpoint.every_steps=1000", "checkpoint.every_minutes=0.00001",
                   "checkpoint.keep=100", "log.every_steps=5")
    assert result.returncode == 0, result.stderr[-3000:]
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    steps = {name.rsplit("-", 2)[1]: [] for name in names}
    for name in names:
        steps[name.rsplit("-", 2)[1]].append(int(name.rsplit("-", 1)[1]))
    assert {5, 10, 15, 20} <= set(steps["warmup"]) and {5, 10, 15, 20} <= set(steps["image"]), names
