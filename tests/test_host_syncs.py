"""The training step never waits for the device: host syncs happen only when the loss window is folded.

A step that reads a device value on the host (``.item()``, ``bool(tensor)``, ``.tolist()``, a boolean-mask
index whose result size depends on the data, ...) stalls the GPU queue until everything before it has run.
vitwarm's loop keeps every per-step quantity on the device (the non-finite guard included) and reads them
only in ``vitwarm.step.add_counts``, at log records, evaluations and checkpoints.

The CPU test runs the tiny config in this process with every such Tensor method wrapped by a counter. It
is armed from the start of each step's computation (``seed_step``) to the next fold (``add_counts``) or
batch fetch, i.e. over the whole step path between log records. The CUDA test does the same with
``torch.cuda.set_sync_debug_mode('error')``.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import pytest
import torch
from torch.optim.optimizer import _get_value

import vitwarm.step
import vitwarm.train
from vitwarm.config import load_config
from vitwarm.phases import PHASE_SETUP

TINY = Path(__file__).with_name("tiny.yaml")

# Every path of the step: accumulation with no_sync, mixup + label smoothing, gradient clipping in both
# phases, EMA. Evaluations and checkpoints fall on log steps (after the fold), where syncs are allowed.
OVERRIDES = ["log.every_steps=3", "checkpoint.every_steps=6", "train.grad_accum=2", "train.mixup=0.8",
             "train.cutmix=1.0", "train.label_smoothing=0.1", "train.grad_clip=1.0", "train.ema_decay=0.9"]
# Tensor methods that copy a device value to the host (or size an output by the data, like nonzero).
READS = ("item", "tolist", "cpu", "numpy", "nonzero", "__bool__", "__float__", "__int__", "__index__")


class SyncCounter:
    """Records, while armed, each host read of a tensor with the line of vitwarm or library code that made it."""

    def __init__(self):
        self.armed = False
        self.calls: list[str] = []

    def wrap(self, name, method):
        def counted(tensor, *args, **kwargs):
            caller = sys._getframe(1)
            # torch.optim keeps the step counter of non-fused, non-capturable optimizers on the host on
            # purpose (torch/optim/optimizer.py, _get_value: "item is significantly faster than a cpu
            # tensor") and reads it there: a host-to-host read, never a device sync.
            if self.armed and caller.f_code is not _get_value.__code__:
                self.calls.append(f"Tensor.{name} at {traceback.format_stack(caller, limit=1)[0].strip()}")
            return method(tensor, *args, **kwargs)
        return counted

    def wrap_getitem(self, method):
        def counted(tensor, index):
            masks = index if isinstance(index, tuple) else (index,)
            if self.armed and any(isinstance(m, torch.Tensor) and m.dtype == torch.bool for m in masks):
                caller = sys._getframe(1)
                self.calls.append(f"boolean-mask index at {traceback.format_stack(caller, limit=1)[0].strip()}")
            return method(tensor, index)
        return counted


class StepPath:
    """Calls ``arm`` when a step starts computing (``seed_step``, after its batches are fetched) and ``disarm``
    when the window is folded (``add_counts``) or the next batches are fetched: the data path (loaders,
    generators, worker start-up) is host work by design and not what this measures."""

    def __init__(self, monkeypatch, arm, disarm):
        self.steps = 0
        seed_step, add_counts = vitwarm.train.seed_step, vitwarm.train.add_counts

        def step_starts(*args, **kwargs):
            self.steps += 1
            result = seed_step(*args, **kwargs)
            arm()
            return result

        def fold(*args, **kwargs):
            disarm()
            return add_counts(*args, **kwargs)

        def unarmed_batches(setup):
            def wrapped(*args, **kwargs):
                run = setup(*args, **kwargs)
                run.batches = Unarmed(run.batches, disarm)
                return run
            return wrapped

        monkeypatch.setattr(vitwarm.train, "seed_step", step_starts)
        monkeypatch.setattr(vitwarm.train, "add_counts", fold)
        for name, setup in PHASE_SETUP.items():
            monkeypatch.setitem(PHASE_SETUP, name, unarmed_batches(setup))


class Unarmed:
    """An iterator of batches that disarms before each fetch."""

    def __init__(self, batches, disarm):
        self.batches, self.disarm = batches, disarm

    def __iter__(self):
        return self

    def __next__(self):
        self.disarm()
        return next(self.batches)


@pytest.fixture
def counter(monkeypatch):
    counter = SyncCounter()
    for name in READS:
        monkeypatch.setattr(torch.Tensor, name, counter.wrap(name, getattr(torch.Tensor, name)))
    monkeypatch.setattr(torch.Tensor, "__getitem__", counter.wrap_getitem(torch.Tensor.__getitem__))
    counter.path = StepPath(monkeypatch, arm=lambda: setattr(counter, "armed", True),
                            disarm=lambda: setattr(counter, "armed", False))
    return counter


def run_tiny(run_dir: Path, shards: Path) -> dict:
    torch.set_num_threads(1)
    cfg = load_config(TINY, [f"data.source={shards}", f"run.dir={run_dir}", *OVERRIDES])
    return vitwarm.train.run(cfg)


def test_no_host_reads_between_log_records(tmp_path, fmnist_shards, counter):
    summary = run_tiny(tmp_path / "run", fmnist_shards)
    steps = summary["phases"]["warmup"]["steps"] + summary["phases"]["image"]["steps"]
    assert counter.path.steps == steps, "the counter did not see every step"
    assert counter.calls == [], f"{len(counter.calls)} host reads on the step path in {steps} steps:\n" + "\n".join(
        sorted(set(counter.calls)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: torch.cuda.set_sync_debug_mode")
def test_no_cuda_syncs_between_log_records(tmp_path, fmnist_shards, monkeypatch):
    # In "error" mode every synchronising CUDA call (.item(), nonzero, a blocking copy, ...) raises.
    path = StepPath(monkeypatch, arm=lambda: torch.cuda.set_sync_debug_mode("error"),
                    disarm=lambda: torch.cuda.set_sync_debug_mode("default"))
    try:
        summary = run_tiny(tmp_path / "run", fmnist_shards)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert path.steps == summary["phases"]["warmup"]["steps"] + summary["phases"]["image"]["steps"]


@pytest.mark.parametrize("fused", [False, True], ids=["torch AdamW", "fused AdamW (found_inf)"])
def test_guarded_step_applies_a_finite_step_and_skips_a_bad_one(fused):
    torch.manual_seed(0)
    models = [torch.nn.Linear(8, 4) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    guarded, plain = (torch.optim.AdamW(m.parameters(), lr=0.1, fused=fused) for m in models)
    x = torch.randn(16, 8)
    for _ in range(2):  # finite: exactly what a plain step does
        for model in models:
            model(x).square().mean().backward()
        vitwarm.step.guarded_step(guarded, list(models[0].parameters()), torch.tensor(True))
        plain.step()
        for model in models:
            model.zero_grad()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(a, b)
    before = [p.clone() for p in models[0].parameters()]
    for p in models[0].parameters():
        p.grad = torch.full_like(p, float("nan"))
    vitwarm.step.guarded_step(guarded, list(models[0].parameters()), torch.tensor(False))
    for p, old in zip(models[0].parameters(), before):
        assert torch.equal(p, old), "a skipped step changed the weights"


def test_nan_between_log_records_names_its_step_and_saves_nothing_after_it(tmp_path, fmnist_shards):
    # The same diverging run, stopped at once (a record every step) and only at the next record or
    # checkpoint: both name the same first non-finite step, and no checkpoint holds a step after it.
    messages = []
    for name, every in (("every step", 1), ("deferred", 5)):
        run_dir = tmp_path / name
        cfg = load_config(TINY, [f"data.source={fmnist_shards}", f"run.dir={run_dir}", "warmup.lr=1e30",
                                 "warmup.grad_clip=0", f"log.every_steps={every}", "checkpoint.every_steps=2"])
        with pytest.raises(vitwarm.step.NonFiniteLoss) as stop:
            vitwarm.train.run(cfg)
        messages.append(str(stop.value).replace(str(run_dir), "RUN_DIR"))
        bad = int(str(stop.value).split(" at step ")[1].split(";")[0])
        saved = [int(p.name.rsplit("-", 1)[1]) for p in (run_dir / "checkpoints").iterdir()]
        # A checkpoint named N holds steps 0..N-1: none may include the bad step.
        assert saved and max(saved) <= bad, f"checkpoint after the bad step {bad}: {saved}"
    assert messages[0] == messages[1]
    assert "warmup loss is nan at step" in messages[0] or "warmup loss is inf at step" in messages[0]
