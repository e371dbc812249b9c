"""``vitwarm warmup`` (vitwarm.cli.warmup): a recipe's warm-up alone ends with a headless backbone in timm's
hub format and a summary, and that backbone fine-tunes in stock timm from ``local-dir:`` as
docs/use_elsewhere.md shows it.

timm's ``train.py`` is not part of the timm package (it lives in timm's source tree), so the fine-tune
below is what that script does with ``--model local-dir:RUN_DIR/warmup --pretrained --num-classes 10
--in-chans 1``, step for step through timm's public functions: ``create_model``, ``resolve_data_config``,
``create_transform``, ``create_optimizer_v2`` and a training step.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import timm
import torch
from accelerate.state import AcceleratorState
from safetensors.torch import load_file
from timm.data import create_transform, resolve_data_config
from timm.optim import create_optimizer_v2

from vitwarm.cli.main import main
from vitwarm.config import load_config
from vitwarm.data import read_splits
from vitwarm.data.reader import Faults, decode
from vitwarm.data.synthetic import synthetic_shard

from helpers import ENV, ROOT, SYNTHETIC, TINY, call_main, free_port, train_records


@pytest.fixture(scope="module")
def warmed(tmp_path_factory):
    """(run directory, output) of ``vitwarm warmup`` on the tiny recipe and generated images."""
    run_dir = tmp_path_factory.mktemp("warmup") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        status, out = call_main(main, ["warmup", "--config", str(TINY), *SYNTHETIC, f"run.dir={run_dir}"])
    finally:
        torch.set_num_threads(threads)
        AcceleratorState._reset_state(reset_partial_state=True)
    assert status == 0, out
    return run_dir, out


def test_the_warmup_alone_writes_its_backbone_and_a_summary(warmed):
    run_dir, out = warmed
    summary = json.loads((run_dir / "summary.json").read_text())
    assert list(summary["phases"]) == ["warmup"] and summary["image_samples"] == 0
    assert summary["top1"] is None and summary["identity"]["warmup.alone"] is True
    phase = summary["phases"]["warmup"]
    assert phase["used_steps"] == phase["planned_steps"] == 3 and phase["used_flops"] > 0
    assert summary["probe"]["stop"] == "budget" and summary["probe"]["last_acc"] is not None
    assert not (run_dir / "model").exists()
    assert {r.get("phase") for r in train_records(run_dir)} == {"warmup"}
    assert "warm-up alone: 3 of 3 steps" in out and "backbone in warmup/" in out
    config = json.loads((run_dir / "warmup" / "config.json").read_text())
    assert config["num_classes"] == 0 and config["vitwarm"]["kind"] == "warmup"


def test_a_second_launch_finds_it_finished(warmed):
    run_dir, _ = warmed
    status, out = call_main(main, ["warmup", "--config", str(TINY), *SYNTHETIC, f"run.dir={run_dir}"])
    AcceleratorState._reset_state(reset_partial_state=True)
    assert status == 0 and "is already finished (warm-up alone: 3 of 3 steps" in out


def test_timm_fine_tunes_the_backbone_from_local_dir(warmed):
    run_dir, _ = warmed
    model = timm.create_model(f"local-dir:{run_dir}/warmup", pretrained=True, num_classes=10, in_chans=1)
    exported = load_file(run_dir / "warmup" / "model.safetensors")
    state = model.state_dict()
    assert all(torch.equal(state[name], tensor) for name, tensor in exported.items())  # the warm-up, as exported
    assert model.head.weight.shape == (10, 64)  # a fresh head of the asked size
    transform = create_transform(**resolve_data_config({}, model=model), is_training=True)
    info = read_splits(load_config(TINY, list(SYNTHETIC)).data)["train"]
    pairs = [decode(s, 10, Faults(strict=True)) for url in info.urls[:2] for s in synthetic_shard(url)]
    torch.manual_seed(0)
    images = torch.stack([transform(image.convert("L")) for image, _ in pairs])  # (32, 1, 28, 28)
    labels = torch.tensor([label for _, label in pairs])
    optimizer = create_optimizer_v2(model, opt="adamw", lr=1e-3, weight_decay=0.05)
    model.train()
    losses = []
    for _ in range(8):  # one batch, again and again: a model that trains fits it
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.8 * losses[0], losses


@pytest.mark.slow  # two trainer processes under accelerate launch
def test_the_warmup_alone_runs_under_accelerate_launch(tmp_path, warmed):
    run_dir = tmp_path / "two"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
              str(ROOT / "recipes/accelerate/cpu_ddp.yaml"), "--main_process_port", str(free_port())]
    command = ["-m", "vitwarm", "warmup", "--config", str(TINY), *SYNTHETIC, f"run.dir={run_dir}"]
    result = subprocess.run([*launch, *command], cwd=ROOT, env=ENV | {"PYTHONPATH": str(ROOT)}, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["environment"]["num_processes"] == 2 and list(summary["phases"]) == ["warmup"]
    # the same warm-up as in one process (its budget and batches), split over two
    one = json.loads((warmed[0] / "summary.json").read_text())["phases"]["warmup"]
    two = summary["phases"]["warmup"]
    assert [two[k] for k in ("global_batch", "planned_steps", "used_steps", "used_flops")] == [
        one[k] for k in ("global_batch", "planned_steps", "used_steps", "used_flops")]
    assert two["micro_batch"] * 2 == one["micro_batch"]
    assert (run_dir / "warmup" / "model.safetensors").is_file()
