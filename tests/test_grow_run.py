"""A run whose warm-up trains a smaller ViT (``warmup.model``) grown into the image model: FLOPs, the small
export, resume after SIGKILL in both phases and at the switch, refusals before step 1.

The grown run is tests/tiny.yaml with a 6-block image model (dim 64, 2 heads of 32) and a 4-block warm-up
core of half the width (dim 32, 1 head of 32) whose middle two blocks are one shared block.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

from vitwarm.config import load_config
from vitwarm.run.preflight import preflight

from helpers import ENV, GROWN, ROOT, TINY, Mistake, check_mistake, train, train_records

pytestmark = pytest.mark.slow

SMALL = dict(embed_dim=32, num_heads=1, depth=4)


def forward_flops(**kwargs) -> int:
    """Forward FLOPs of the blocks of the tiny recipe's model on one sample (16 grid tokens + the class
    token), counted by torch's FlopCounterMode (attention as explicit matmuls, which it counts)."""
    vit = timm.create_model("vitwarm_pico_patch7_28", num_classes=0, **kwargs)
    for block in vit.blocks:
        block.attn.fused_attn = False
    with FlopCounterMode(display=False) as counter:
        vit.blocks(torch.zeros(1, 17, vit.embed_dim))
    return counter.get_total_flops()


@pytest.fixture(scope="module")
def grown(tmp_path_factory, fmnist_shards) -> Path:
    run_dir = tmp_path_factory.mktemp("grow") / "reference"
    result = train(run_dir, fmnist_shards, *GROWN)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "grew 74 tensors" in result.stdout and "big block <- small block [0, 1, 1, 2, 2, 3]" in result.stdout
    return run_dir


def test_the_warmups_flops_are_the_small_models(grown):
    phases = json.loads((grown / "summary.json").read_text())["phases"]
    warm, image = phases["warmup"], phases["image"]
    assert warm["flops"] == 3 * forward_flops(**SMALL) * warm["samples"]
    assert image["flops"] == 3 * forward_flops(embed_dim=64, num_heads=2, depth=6) * image["samples"]


def test_compute_matched_spends_the_small_warmups_flops(fmnist_shards):
    cfg = load_config(TINY, [f"data.source={fmnist_shards}", *GROWN, "budget.regime=additive"])
    matched = load_config(TINY, [f"data.source={fmnist_shards}", *GROWN, "budget.regime=compute_matched"])
    warm, image = preflight(cfg, world_size=1).phases
    (extra_image,) = preflight(matched, world_size=1).phases
    ratio = forward_flops(**SMALL) / forward_flops(embed_dim=64, num_heads=2, depth=6)
    assert extra_image.steps - image.steps == round(warm.samples * ratio / image.global_batch)
    assert 0 < extra_image.steps - image.steps < warm.samples / image.global_batch  # fewer than a full-size one


def test_the_warmup_export_is_the_small_model_for_stock_timm(grown):
    script = f"""
import timm, torch
vit = timm.create_model("local-dir:{grown / 'warmup'}", pretrained=True)
shared = all(torch.equal(a, b) for a, b in zip(vit.blocks[1].parameters(), vit.blocks[2].parameters()))
print(vit.embed_dim, len(vit.blocks), vit.num_heads if hasattr(vit, 'num_heads') else vit.blocks[0].attn.num_heads,
      vit.num_classes, shared, "vitwarm" in __import__("sys").modules)
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=ENV, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["32", "4", "1", "0", "True", "False"]


def killed(run_dir: Path, shards: Path, kill_at: str) -> None:
    result = subprocess.run([sys.executable, "-m", "vitwarm.train", "--config", str(TINY), f"data.source={shards}",
                             f"run.dir={run_dir}", *GROWN], cwd=ROOT, env=ENV | {"VITWARM_KILL_AT": kill_at},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == -signal.SIGKILL, f"not killed at {kill_at}: {result.stderr[-2000:]}"


def test_resume_after_kills_in_the_warmup_at_the_switch_and_in_the_image_phase(tmp_path, grown, fmnist_shards):
    """Checkpoints every 3 steps: 25 warm-up steps, then 50 image steps. Each launch counts its own saves."""
    run_dir = tmp_path / "run"
    checkpoints = run_dir / "checkpoints"
    killed(run_dir, fmnist_shards, "checkpoint:files@4")  # writing warm-up step 12: resumes at 9
    killed(run_dir, fmnist_shards, "checkpoint:files@6")  # writing the warm-up's end, its export written
    assert (run_dir / "warmup").is_dir() and not (checkpoints / "0-warmup-00000025").exists()
    killed(run_dir, fmnist_shards, "checkpoint:files@2")  # writing image step 3: resumes at the switch
    assert sorted(p.name for p in checkpoints.iterdir() if not p.name.startswith("."))[-1] == "0-warmup-00000025"
    killed(run_dir, fmnist_shards, "checkpoint:files@2")  # grown again; killed writing image step 6
    result = train(run_dir, fmnist_shards, *GROWN)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from" in result.stdout and "image step 3" in result.stdout
    for name in ("warmup/model.safetensors", "model/model.safetensors", "model/config.json"):
        assert (run_dir / name).read_bytes() == (grown / name).read_bytes(), name
    assert train_records(run_dir) == train_records(grown)


@pytest.mark.parametrize("row", [
    Mistake("mismatched head dims", ["-m", "vitwarm.train", "--config", "{tiny}",
                                     "warmup.model.kwargs.embed_dim=32", "warmup.model.kwargs.num_heads=2"],
            "head dims differ (32/2 = 16 vs 64/2 = 32)"),
    Mistake("non-integer width", ["-m", "vitwarm.train", "--config", "{tiny}", "warmup.model.kwargs.embed_dim=48"],
            "the width 48 -> 64 is not an integer factor"),
    Mistake("class token it cannot place", ["-m", "vitwarm.train", "--config", "{tiny}", "transfer.keep_cls_token=true",
                                            "warmup.model.kwargs.embed_dim=32", "warmup.model.kwargs.num_heads=1",
                                            "warmup.model.kwargs.reg_tokens=2"],
            "its class/register tokens"),
    Mistake("shared middle of a 2-block model", ["-m", "vitwarm.train", "--config", "{tiny}",
                                                 "warmup.model.shared_middle=true"],
            "warmup.model.shared_middle=true on the 2-block warmup.model"),
    Mistake("a model name timm does not know", ["-m", "vitwarm.train", "--config", "{tiny}",
                                                "warmup.model.name=vitwarm_pico_patch7_29"],
            "warmup.model.name='vitwarm_pico_patch7_29' is not a timm model"),
    Mistake("with composed sources", ["-m", "vitwarm.train", "--config", "{tiny}", "transfer.sources.attn={tmp}",
                                      "warmup.model.kwargs.embed_dim=32", "warmup.model.kwargs.num_heads=1"],
            "grows this run's own warm-up, and transfer.sources has none"),
], ids=str)
def test_impossible_growth_is_refused_in_one_line_before_step_1(row, tmp_path, fmnist_shards):
    check_mistake(row, tmp_path, fmnist_shards)
