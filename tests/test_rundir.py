"""The run directory's primitives: atomic writes under a real SIGKILL, stable safetensors bytes, identity, summaries."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from vitwarm.atomic import atomic_write_text, safetensors_bytes, temporary_name, write_safetensors
from vitwarm.config import ADDED, load_config
from vitwarm.run.rundir import Summary, changed_keys, identity, read_summary, run_state

WRITE = """
import sys
from vitwarm.atomic import atomic_write_text
atomic_write_text(sys.argv[1], "new content\\n")
"""


@pytest.mark.slow
@pytest.mark.parametrize("kill", [True, False])
def test_atomic_write_leaves_the_old_file_or_the_new_one(tmp_path, kill):
    path = tmp_path / "summary.json"
    path.write_text("old content\n")
    env = os.environ | ({"VITWARM_KILL_AT": "write:summary.json"} if kill else {})
    result = subprocess.run([sys.executable, "-c", WRITE, str(path)], env=env, capture_output=True)
    assert result.returncode == (-9 if kill else 0), result.stderr
    assert path.read_text() == ("old content\n" if kill else "new content\n")
    assert len(list(tmp_path.glob(".tmp-summary.json@*"))) == (1 if kill else 0)  # the killed writer's
    atomic_write_text(path, "later\n")  # the dead writer's temporary file is removed, not in the way
    assert path.read_text() == "later\n" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_each_writer_has_its_own_temporary_file_and_a_live_writers_is_left_alone(tmp_path):
    path = tmp_path / "overrides.json"
    names = {temporary_name(path).name for _ in range(2)}
    assert len(names) == 2 and all(f"-{os.getpid()}-" in name for name in names)
    live = tmp_path / f".tmp-overrides.json@{socket.gethostname()}-{os.getppid()}-0123abcd"  # a writer still at work
    live.write_text("half")
    atomic_write_text(path, "{}\n")
    assert live.read_text() == "half" and path.read_text() == "{}\n"


SAVE = """
import sys, torch
from vitwarm.atomic import write_safetensors
tensors = {"b": torch.arange(6.0).reshape(2, 3), "a": torch.ones(4, dtype=torch.bfloat16)}
metadata = {f"key{i}": str(i) for i in range(12)} | {"format": "pt"}
write_safetensors(sys.argv[1], tensors, metadata)
"""


@pytest.mark.slow
def test_safetensors_bytes_do_not_depend_on_the_process(tmp_path):
    # safetensors orders metadata by a per-process random hash: twelve keys differ in order almost always.
    paths = [tmp_path / f"{i}.safetensors" for i in range(3)]
    for path in paths:
        subprocess.run([sys.executable, "-c", SAVE, str(path)], check=True)
    assert paths[0].read_bytes() == paths[1].read_bytes() == paths[2].read_bytes()
    assert torch.equal(load_file(paths[0])["b"], torch.arange(6.0).reshape(2, 3))
    write_safetensors(tmp_path / "none.safetensors", {"x": torch.zeros(2)})
    assert safetensors_bytes({"x": torch.zeros(2)}) == (tmp_path / "none.safetensors").read_bytes()


def test_identity_ignores_only_keys_that_do_not_change_a_run():
    base = identity(load_config(None, []))
    same = identity(load_config(None, ["run.dir=elsewhere", "log.every_steps=7", "checkpoint.keep=5",
                                       "eval.batch_size=3", "warmup.num_workers=4", "resume=never"]))
    assert same == base
    one_worker = [identity(load_config(None, [f"data.num_workers={n}"])) for n in (0, 1)]
    assert one_worker[0] == one_worker[1] != base
    for change in ("seed=1", "budget.epochs=3", "warmup.fraction=0.5", "data.num_workers=3", "train.lr=0.1",
                   "model.kwargs.depth=3", "eval.every_epochs=2"):
        assert identity(load_config(None, [change])) != base, change


def test_a_summary_that_does_not_parse_is_not_finished(tmp_path):
    assert run_state(tmp_path) == "new"
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    for text in ("", "{", "[]", json.dumps({"top1": 50.0})):
        (tmp_path / "summary.json").write_text(text)
        assert read_summary(tmp_path) is None and run_state(tmp_path) == "interrupted", text
    summary = Summary(top1=1.0, top5=2.0, split="validation", test_top1=None, test_top5=None, ema_top1=None,
                      image_samples=10, warmup_samples=0, masked_acc=None, train_s=1.0, wall_s=2.0,
                      skipped_samples=0, phases={}, identity={"seed": 0})
    (tmp_path / "summary.json").write_text(json.dumps(summary.__dict__))
    assert read_summary(tmp_path) == summary
    # Before train_s, wall_s counted the training steps only: an archived summary reads back in today's terms.
    old = {k: v for k, v in summary.__dict__.items() if k not in ("train_s", "wall_s")} | {"wall_s": 1.0}
    (tmp_path / "summary.json").write_text(json.dumps(old))
    assert (read_summary(tmp_path).train_s, read_summary(tmp_path).wall_s) == (1.0, None)
    (tmp_path / "summary.json").write_text(json.dumps(summary.__dict__))
    assert run_state(tmp_path, {"seed": 0}) == "finished"
    assert run_state(tmp_path, {"seed": 1}) == "other config"


def test_a_run_recorded_under_keys_renamed_since_is_still_finished(tmp_path):
    """config.RENAMED keys of an earlier version's summary count under their new names; values still count."""
    from vitwarm.config import RENAMED

    from helpers import write_finished

    current = identity(load_config(None, []))
    old_names = {new: old for old, (new, _) in RENAMED.items()}
    recorded = {old_names.get(k, k): v for k, v in current.items()}
    assert recorded != current  # the rename does show in the recorded keys
    write_finished(tmp_path, recorded)
    assert run_state(tmp_path, current) == "finished"
    assert changed_keys(recorded, current) == {}
    recorded["warmup.lr_warmup"] = 0.5
    write_finished(tmp_path, recorded)
    assert run_state(tmp_path, current) == "other config"
    assert list(changed_keys(recorded, current)) == ["warmup.lr_warmup_fraction"]


def test_a_run_of_an_earlier_version_is_not_other_settings_for_keys_added_since():
    """An archived run's identity lacks the keys added since; each reads as the value it ran as."""
    cfg = load_config(None, ["warmup.stop=budget"])
    recorded = {k: v for k, v in identity(cfg).items() if k not in ADDED}
    assert changed_keys(recorded, identity(cfg)) == {}
    # The new default, an adaptive stop, is another setting than the fixed-length warm-up of earlier versions.
    assert changed_keys(recorded, identity(load_config(None, []))) == {"warmup.stop": ["budget", "plateau"]}
