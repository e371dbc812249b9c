"""FSDP2 runs (run.parallel=fsdp): real ``accelerate launch`` with recipes/accelerate/cpu_fsdp.yaml, 2 CPU processes
over gloo, on tests/tiny.yaml (25 warm-up steps, 50 image steps, a checkpoint every 3 steps).

One FSDP run is the module's reference; each other test starts a run of its own only where it must (a DDP run
to compare losses with, runs killed inside a sharded save, resumes with 1 and 2 processes). Saves of the tiny
run, in order: warm-up steps 3..24 (1-8), the warm-up's end at 25 (9), image steps 3..48 (10-25), the end (26).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import timm
import torch
import yaml
from accelerate import Accelerator
from omegaconf import OmegaConf
from safetensors.torch import load_file

from vitwarm.models import WarmupViT
from vitwarm.run.fsdp import is_sharded, shard
from vitwarm.run.images import data_layout
from vitwarm.run.phases import Training
from vitwarm.run.sharded_checkpoints import load_any

from helpers import (
    ENV,
    GROWN,
    PER_STEP_LOGS,
    ROOT,
    STOCK_EVAL,
    TINY,
    assert_same_weights_and_records,
    free_port,
    train,
    train_in_process,
    train_records,
)

FSDP, DDP = "cpu_fsdp.yaml", "cpu_ddp.yaml"
SHARDED_FILES = {"__0_0.distcp", "__1_0.distcp", ".metadata"}


def losses(run_dir, phase: str) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in train_records(run_dir) if r["phase"] == phase and "loss" in r
            and "event" not in r}


def assert_close_losses(run_dir, reference, phase: str, first: int) -> None:
    """The step losses of ``phase`` from step ``first`` on agree within float tolerance (relative 1e-5)."""
    got, expected = losses(run_dir, phase), losses(reference, phase)
    steps = [s for s in got if s >= first]
    assert steps and all(s in expected for s in steps), (sorted(got), sorted(expected))
    for step in steps:
        assert got[step] == pytest.approx(expected[step], rel=1e-5), (phase, step, got[step], expected[step])


def interrupt(run_dir, shards, launch: str, kill_at: str, *overrides: str) -> None:
    """A run of 2 processes SIGKILLed at the fault point ``kill_at`` (vitwarm.atomic.fault_point)."""
    result = train(run_dir, shards, *PER_STEP_LOGS, *overrides, launch=launch, kill_at=kill_at)
    assert result.returncode != 0 and not (run_dir / "summary.json").exists(), result.stderr[-3000:]


def resume(run_dir, shards, checkpoint: str, *overrides: str, launch: str | None = None) -> str:
    """The same run launched again to its end from ``checkpoint``; its standard output."""
    result = train(run_dir, shards, *PER_STEP_LOGS, *overrides, launch=launch)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming from {run_dir / 'checkpoints' / checkpoint} " in result.stdout
    return result.stdout


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory, fmnist_shards):
    """The documented command: accelerate launch --config_file recipes/accelerate/cpu_fsdp.yaml -m vitwarm.train
    --config tests/tiny.yaml (the shards, the run directory and a record per step added)."""
    run_dir = tmp_path_factory.mktemp("fsdp") / "run"
    result = train(run_dir, fmnist_shards, *PER_STEP_LOGS, launch=FSDP)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.mark.slow
def test_both_phases_train_sharded_and_write_sharded_checkpoints(fsdp_run):
    summary = json.loads((fsdp_run / "summary.json").read_text())
    assert summary["environment"]["num_processes"] == 2
    assert summary["phases"]["warmup"]["steps"] == 25 and summary["phases"]["image"]["steps"] == 50
    assert yaml.safe_load((fsdp_run / "config.yaml").read_text())["run"]["parallel"] == "fsdp"  # from the launch
    checkpoints = sorted((fsdp_run / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == ["1-image-00000048", "1-image-00000050"]
    for checkpoint in checkpoints:
        manifest = json.loads((checkpoint / "state.json").read_text())["files"]
        assert set(manifest) == SHARDED_FILES == {p.name for p in checkpoint.iterdir()} - {"state.json"}
    # Each process wrote its own part of the model and optimizer, not a copy of the whole.
    shards = [(checkpoints[-1] / name).read_bytes() for name in ("__0_0.distcp", "__1_0.distcp")]
    assert shards[0] != shards[1]


@pytest.mark.slow
def test_first_losses_of_both_phases_match_a_ddp_run_whose_checkpoints_resume_with_one_process(tmp_path, fmnist_shards,
                                                                                             fsdp_run):
    # The DDP run of the same seed, stopped at its third image checkpoint: both phases' first steps are logged.
    run_dir = tmp_path / "ddp"
    interrupt(run_dir, fmnist_shards, DDP, "checkpoint:files@12")
    assert_close_losses(run_dir, fsdp_run, "warmup", first=1)
    assert_close_losses(run_dir, fsdp_run, "image", first=1)
    assert max(losses(run_dir, "image")) >= 9
    # Its single-file checkpoints keep torch's optimizer state by parameter position: a sharded run refuses them.
    refused = train(run_dir, fmnist_shards, "run.parallel=fsdp")
    errors = [line for line in refused.stderr.splitlines() if line.startswith("vitwarm: error: ")]
    assert refused.returncode == 1 and errors == [
        f"vitwarm: error: checkpoint {run_dir / 'checkpoints' / '1-image-00000006'} is a single-file checkpoint "
        "(saved with run.parallel=ddp); resume it with run.parallel=ddp and an accelerate config without FSDP"]
    # ...while a DDP run resumes them on another number of processes: whole tensors load anywhere, and the one
    # process stands for the run's 2 data ranks: the image phase goes on with the same batches.
    resume(run_dir, fmnist_shards, "1-image-00000006")  # one process
    assert_close_losses(run_dir, fsdp_run, "image", first=1)


@pytest.mark.slow
def test_a_small_core_grows_under_fsdp_as_under_ddp(tmp_path, fmnist_shards):
    # The growth test's run (a 4-block core, its middle blocks shared, grown into 6 blocks) sharded and not, both
    # stopped writing image step 9's checkpoint: the core's steps, the growth and the grown model's steps agree.
    for launch, kill_at in ((FSDP, "checkpoint:shards@12"), (DDP, "checkpoint:files@12")):
        interrupt(tmp_path / launch, fmnist_shards, launch, kill_at, *GROWN)
    assert_close_losses(tmp_path / FSDP, tmp_path / DDP, "warmup", first=1)
    assert_close_losses(tmp_path / FSDP, tmp_path / DDP, "image", first=1)
    assert max(losses(tmp_path / FSDP, "image")) >= 8
    checkpoint = json.loads((tmp_path / FSDP / "checkpoints" / "1-image-00000006" / "state.json").read_text())
    assert set(checkpoint["files"]) == SHARDED_FILES  # the grown model trains sharded


@pytest.mark.slow
def test_sigkill_inside_a_sharded_save_keeps_the_previous_checkpoint_and_resumes_bitwise(tmp_path, fmnist_shards,
                                                                                         fsdp_run):
    run_dir = tmp_path / "run"
    # Killed after every process wrote its shard of image step 9 and before the manifest and the rename.
    interrupt(run_dir, fmnist_shards, FSDP, "checkpoint:shards@12")
    root = run_dir / "checkpoints"
    assert {p.name for p in root.iterdir()} == {"1-image-00000003", "1-image-00000006", ".tmp-1-image-00000009"}
    assert {p.name for p in (root / ".tmp-1-image-00000009").iterdir()} >= SHARDED_FILES

    # Resumed with activation checkpointing, which recomputes each block's forward in the backward pass.
    out = resume(run_dir, fmnist_shards, "1-image-00000006", "run.grad_checkpointing=true", launch=FSDP)
    assert "saved by 2 process(es), into 2" in out
    # Same processes, same shards, same arithmetic (the recomputed forward is the same): the resumed run is the
    # uninterrupted one, byte for byte.
    assert_same_weights_and_records(run_dir, fsdp_run)


@pytest.mark.slow
def test_saved_by_two_resumes_with_one_past_a_damaged_shard(tmp_path, fmnist_shards, fsdp_run):
    run_dir = tmp_path / "run"
    interrupt(run_dir, fmnist_shards, FSDP, "checkpoint:shards@3")
    newest = run_dir / "checkpoints" / "0-warmup-00000006"
    shard = newest / "__1_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 1  # one flipped bit in tensor data: only the recorded hash can tell
    shard.write_bytes(data)

    out = resume(run_dir, fmnist_shards, "0-warmup-00000003", "run.parallel=fsdp")  # one process
    warnings = [line for line in out.splitlines() if line.startswith("vitwarm: warning:")]
    assert warnings == [f"vitwarm: warning: skipping checkpoint {newest}: __1_0.distcp does not match its recorded "
                        "hash (damaged or replaced)"]
    assert "saved by 2 process(es), into 1" in out
    # The warm-up's global batches do not depend on the number of processes, and the image phase's order is laid
    # out for the 2 processes the run started with, which the one process stands for in turn (vitwarm.run.images):
    # the same losses in both phases within float tolerance (sums split differently over processes).
    assert_close_losses(run_dir, fsdp_run, "warmup", first=4)
    assert_close_losses(run_dir, fsdp_run, "image", first=1)
    summary, reference = (json.loads((d / "summary.json").read_text()) for d in (run_dir, fsdp_run))
    assert summary["environment"]["num_processes"] == 1
    for phase in ("warmup", "image"):
        assert summary["phases"][phase]["steps"] == reference["phases"][phase]["steps"]
    assert summary["top1"] == pytest.approx(reference["top1"], abs=0.05)


@pytest.mark.slow
def test_a_sharded_checkpoint_loads_whole_into_one_process_bitwise(fsdp_run):
    # The last checkpoint holds the weights the run exported, in two shards; loaded here, without a process group.
    cfg = yaml.safe_load(TINY.read_text())["model"]
    model = timm.create_model(cfg["name"], in_chans=cfg["in_chans"], num_classes=10, **cfg["kwargs"])
    optimizer = torch.optim.AdamW(model.parameters())
    accelerator = Accelerator(cpu=True)
    line = load_any(fsdp_run / "checkpoints" / "1-image-00000050", Training(model, optimizer, None, iter(()), None),
                    accelerator)
    assert "saved by 2 process(es), into 1" in line
    exported = load_file(fsdp_run / "model" / "model.safetensors")
    weights = model.state_dict()
    assert exported.keys() == weights.keys()
    assert all(torch.equal(exported[k], weights[k]) for k in exported)
    assert optimizer.state and all(int(s["step"]) == 50 for s in optimizer.state.values())


@pytest.mark.slow
def test_export_of_an_fsdp_run_loads_in_stock_timm_with_the_summary_top1(tmp_path, fmnist_shards, fsdp_run):
    model_dir = fsdp_run / "model"
    assert [p.name for p in model_dir.iterdir() if p.suffix == ".safetensors"] == ["model.safetensors"]
    assert load_file(model_dir / "model.safetensors")["head.weight"].shape == (10, 64)  # whole, not a shard
    result = subprocess.run([sys.executable, "-c", STOCK_EVAL, str(model_dir), str(fmnist_shards)], cwd=tmp_path,
                            env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.splitlines()[-1])
    summary = json.loads((fsdp_run / "summary.json").read_text())
    assert got["samples"] == 500 and abs(got["top1"] - summary["top1"]) <= 0.1, (got["top1"], summary["top1"])


# Two sharded processes evaluating splits of unequal length: rank 0 has 3 batches, rank 1 one.
UNEVEN_EVAL = r"""
import json, torch, timm
from accelerate import Accelerator
from omegaconf import OmegaConf
from omegaconf import OmegaConf
import vitwarm.models
from vitwarm.run.fsdp import is_sharded, shard
from vitwarm.run.images import evaluate

accelerator = Accelerator(cpu=True)
cfg = OmegaConf.create({"run": {"parallel": "fsdp", "grad_checkpointing": False}, "precision": "fp32"})
torch.manual_seed(0)
model = shard(cfg, accelerator, timm.create_model("vitwarm_pico_patch7_28", in_chans=1, num_classes=10))
class Split(list):
    on_device = staticmethod(lambda x: x.float() / 255)
batch = (torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8), torch.arange(4))
result = evaluate(model, Split([batch] * (3 if accelerator.process_index == 0 else 1)), accelerator)
if accelerator.is_main_process:  # the result is summed over both processes
    print(json.dumps({"sharded": is_sharded(model), "samples": result["samples"]}))
"""


@pytest.mark.slow
def test_sharded_evaluation_of_uneven_splits_does_not_hang(tmp_path):
    script = tmp_path / "uneven.py"
    script.write_text(UNEVEN_EVAL)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / "recipes/accelerate" / FSDP), "--main_process_port", str(free_port()), str(script)]
    result = subprocess.run(command, cwd=ROOT, env=ENV | {"PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines == [{"sharded": True, "samples": 16}]


def test_grad_checkpointing_is_turned_on_in_every_vit_of_the_model():
    cfg = OmegaConf.create({"run": {"parallel": "fsdp", "grad_checkpointing": True}, "precision": "fp32"})
    vit = timm.create_model("vitwarm_pico_patch7_28", in_chans=1, num_classes=0)
    model = shard(cfg, Accelerator(cpu=True), WarmupViT(vit, vocab_size=10, seq_len=16))
    assert model.vit.grad_checkpointing and not is_sharded(model)  # one process: nothing to shard


@pytest.mark.parametrize("overrides,names", [
    (["run.parallel=fsdp", "train.ema_decay=0.99"], "train.ema_decay=0.99 with run.parallel=fsdp"),
    (["run.parallel=fsdp", "precision=fp16"], "precision=fp16 with run.parallel=fsdp"),
    (["run.parallel=zero3"], "run.parallel"),
])
def test_what_fsdp_runs_do_not_do_is_refused_before_step_1(tmp_path, fmnist_shards, overrides, names):
    status, out = train_in_process(tmp_path / "run", fmnist_shards, *overrides)
    errors = [line for line in out.splitlines() if line.startswith("vitwarm: error: ")]
    assert status == 1 and len(errors) == 1 and names in errors[0], out
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("recorded", "processes", "ranks", "warned"), [
    (0, 2, 2, False),  # a new run: laid out for its own processes
    (2, 2, 2, False), (2, 1, 2, False), (8, 4, 8, False),  # a divisor keeps the run's order
    (1, 2, 2, True), (4, 3, 3, True),  # no divisor: the same schedule in another order, said in one line
])
def test_a_resume_keeps_the_image_order_on_a_divisor_of_the_runs_processes(recorded, processes, ranks, warned):
    got, warning = data_layout(recorded, processes)
    assert got == ranks and (warning is not None) == warned
    if warned:
        assert warning.startswith(f"vitwarm: warning: the image phase's data order is laid out for {recorded} "
                                  f"processes and {processes} do not divide them") and "\n" not in warning
