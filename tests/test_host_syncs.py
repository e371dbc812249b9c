"""The training step never waits for the device: the one host sync per log window is ``sync_window``.

A step that reads a device value on the host (``.item()``, ``bool(tensor)``, ``.tolist()``, a boolean-mask
index whose result size depends on the data, ...) stalls the GPU queue until everything before it has run.
vitwarm's loop keeps every per-step quantity on the device (the non-finite guard included) and reads them
only in ``vitwarm.run.step.sync_window``, at log records, evaluations and checkpoints.

The CPU test runs the tiny config in this process with every such Tensor method wrapped by a counter. The
step path is armed from the start of each step's computation (``seed_step``) to the next sync or batch
fetch, i.e. over the whole step path between log records; a checkpoint is armed while it is written; and
the reads inside each ``sync_window`` are counted apart: exactly one per sync. The CUDA test does the same
for the step path with ``torch.cuda.set_sync_debug_mode('error')``.
"""

from __future__ import annotations

import dataclasses
import sys
import traceback
from contextlib import nullcontext

import pytest
import torch
from torch.optim.optimizer import _get_value

import vitwarm.run.context
import vitwarm.run.engine
import vitwarm.run.step
from vitwarm.config import load_config
from vitwarm.run.phases import KINDS

from helpers import TINY

pytestmark = pytest.mark.slow  # trains a run to count its host reads

# Every path of the step: accumulation with no_sync, mixup + label smoothing, gradient clipping in both
# phases, EMA. Evaluations and checkpoints fall on log steps (after the sync), where syncs are allowed.
OVERRIDES = ["log.every_steps=3", "checkpoint.every_steps=6", "train.grad_accum=2", "train.mixup=0.8",
             "train.cutmix=1.0", "train.label_smoothing=0.1", "train.grad_clip=1.0", "train.ema_decay=0.9"]
# Tensor methods that copy a device value to the host (or size an output by the data, like nonzero).
READS = ("item", "tolist", "cpu", "numpy", "nonzero", "__bool__", "__float__", "__int__", "__index__")


class SyncCounter:
    """Records each host read of a tensor, with the line that made it, under the label armed at the time
    ('step', 'sync' or 'save'; None: not counted)."""

    def __init__(self):
        self.armed: str | None = None
        self.calls: dict[str, list[str]] = {"step": [], "sync": [], "save": []}

    def wrap(self, name, method):
        def counted(tensor, *args, **kwargs):
            caller = sys._getframe(1)
            # torch.optim keeps the step counter of non-fused, non-capturable optimizers on the host on
            # purpose (torch/optim/optimizer.py, _get_value: "item is significantly faster than a cpu
            # tensor") and reads it there: a host-to-host read, never a device sync.
            if self.armed and caller.f_code is not _get_value.__code__:
                self.calls[self.armed].append(f"Tensor.{name} at {traceback.format_stack(caller, limit=1)[0].strip()}")
            return method(tensor, *args, **kwargs)
        return counted

    def wrap_getitem(self, method):
        def counted(tensor, index):
            masks = index if isinstance(index, tuple) else (index,)
            if self.armed and any(isinstance(m, torch.Tensor) and m.dtype == torch.bool for m in masks):
                caller = sys._getframe(1)
                self.calls[self.armed].append(
                    f"boolean-mask index at {traceback.format_stack(caller, limit=1)[0].strip()}")
            return method(tensor, index)
        return counted


class StepPath:
    """Calls ``arm`` when a step starts computing (``seed_step``, after its batches are fetched) and ``disarm``
    when the window is synced (``sync_window``) or the next batches are fetched: the data path (loaders,
    generators, worker start-up) is host work by design and not what this measures. ``around_sync`` and
    ``around_save``, when given, wrap each sync and each checkpoint write."""

    def __init__(self, monkeypatch, arm, disarm, around_sync=None, around_save=None):
        self.steps = self.syncs = 0
        seed_step, sync_window = vitwarm.run.engine.seed_step, vitwarm.run.engine.sync_window
        save = vitwarm.run.context.Launch.save

        def step_starts(*args, **kwargs):
            self.steps += 1
            result = seed_step(*args, **kwargs)
            arm()
            return result

        def sync(*args, **kwargs):
            disarm()
            self.syncs += 1
            with around_sync() if around_sync else nullcontext():
                return sync_window(*args, **kwargs)

        def saving(*args, **kwargs):
            with around_save() if around_save else nullcontext():
                return save(*args, **kwargs)

        def unarmed_batches(setup):
            def wrapped(*args, **kwargs):
                training = setup(*args, **kwargs)
                training.batches = Unarmed(training.batches, disarm)
                return training
            return wrapped

        monkeypatch.setattr(vitwarm.run.engine, "seed_step", step_starts)
        monkeypatch.setattr(vitwarm.run.engine, "sync_window", sync)
        monkeypatch.setattr(vitwarm.run.context.Launch, "save", saving)
        for name, kind in KINDS.items():
            monkeypatch.setitem(KINDS, name, dataclasses.replace(kind, setup=unarmed_batches(kind.setup)))


class Unarmed:
    """An iterator of batches that disarms before each fetch."""

    def __init__(self, batches, disarm):
        self.batches, self.disarm = batches, disarm

    def __iter__(self):
        return self

    def __next__(self):
        self.disarm()
        return next(self.batches)


class Armed:
    """Arms ``counter`` under ``label`` for a block, then disarms it."""

    def __init__(self, counter: SyncCounter, label: str):
        self.counter, self.label = counter, label

    def __enter__(self):
        self.counter.armed = self.label

    def __exit__(self, *exc):
        self.counter.armed = None
        return False


@pytest.fixture
def counter(monkeypatch):
    counter = SyncCounter()
    for name in READS:
        monkeypatch.setattr(torch.Tensor, name, counter.wrap(name, getattr(torch.Tensor, name)))
    monkeypatch.setattr(torch.Tensor, "__getitem__", counter.wrap_getitem(torch.Tensor.__getitem__))
    counter.path = StepPath(monkeypatch, arm=lambda: setattr(counter, "armed", "step"),
                            disarm=lambda: setattr(counter, "armed", None),
                            around_sync=lambda: Armed(counter, "sync"), around_save=lambda: Armed(counter, "save"))
    return counter


def run_tiny(run_dir, shards) -> dict:
    torch.set_num_threads(1)
    cfg = load_config(TINY, [f"data.source={shards}", f"run.dir={run_dir}", *OVERRIDES])
    return vitwarm.run.engine.train(cfg)


def test_one_host_read_per_log_window_and_none_elsewhere(tmp_path, fmnist_shards, counter):
    summary = run_tiny(tmp_path / "run", fmnist_shards)
    steps = summary["phases"]["warmup"]["steps"] + summary["phases"]["image"]["steps"]
    assert counter.path.steps == steps, "the counter did not see every step"
    for label in ("step", "save"):
        calls = counter.calls[label]
        assert calls == [], f"{len(calls)} host reads on the {label} path in {steps} steps:\n" + "\n".join(
            sorted(set(calls)))
    # The sync itself: one read (the reduced sums, as a list) per log window, evaluation or checkpoint.
    assert counter.path.syncs > 0
    assert len(counter.calls["sync"]) == counter.path.syncs, "\n".join(sorted(set(counter.calls["sync"])))


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
        vitwarm.run.step.guarded_step(guarded, list(models[0].parameters()), torch.tensor(True))
        plain.step()
        for model in models:
            model.zero_grad()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(a, b)
    before = [p.clone() for p in models[0].parameters()]
    for p in models[0].parameters():
        p.grad = torch.full_like(p, float("nan"))
    vitwarm.run.step.guarded_step(guarded, list(models[0].parameters()), torch.tensor(False))
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
        with pytest.raises(vitwarm.run.step.NonFiniteLoss) as stop:
            vitwarm.run.engine.train(cfg)
        messages.append(str(stop.value).replace(str(run_dir), "RUN_DIR"))
        bad = int(str(stop.value).split(" at step ")[1].split(";")[0])
        saved = [int(p.name.rsplit("-", 1)[1]) for p in (run_dir / "checkpoints").iterdir()]
        # A checkpoint named N holds steps 0..N-1: none may include the bad step.
        assert saved and max(saved) <= bad, f"checkpoint after the bad step {bad}: {saved}"
    assert messages[0] == messages[1]
    assert "warmup loss is nan at step" in messages[0] or "warmup loss is inf at step" in messages[0]
