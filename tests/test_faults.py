"""Faults the way clusters inject them, on real runs: SIGKILL inside each write, damaged files, changed configs.

Every run is a real ``python -m vitwarm.train`` subprocess on tests/tiny.yaml (25 warm-up steps, then 50 image
steps; a checkpoint every 3 steps, a metrics record every 2). Kills land inside a write on purpose: the
environment variable ``VITWARM_KILL_AT`` makes the trainer SIGKILL itself at a named point of the write
(vitwarm.atomic.fault_point), so no test depends on timing. Each test asserts what the user needs: the same
final weights (byte for byte) and metrics records as the uninterrupted run, or one refusing line that names
the file and changes nothing (a run refused before step 1 calls the trainer's main() in the test's process).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from vitwarm.run.rundir import LOCK

from helpers import ENV, ROOT, TINY, free_port, train_in_process

pytestmark = pytest.mark.slow

# Saves of the tiny run, in order: warm-up steps 3..24 (1-8), the warm-up's end at 25 (9), image steps 3..48
# (10-25), the image phase's end at 50 (26).
FIRST_IMAGE_SAVE = 10


def train(run_dir: Path, shards: Path, *overrides: str, kill_at: str | None = None,
          env: dict | None = None) -> subprocess.CompletedProcess:
    env = ENV | (env or {}) | ({"VITWARM_KILL_AT": kill_at} if kill_at else {})
    command = [sys.executable, "-m", "vitwarm.train", "--config", str(TINY), f"data.source={shards}",
               f"run.dir={run_dir}", *overrides]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def killed(run_dir: Path, shards: Path, kill_at: str, *overrides: str) -> Path:
    result = train(run_dir, shards, *overrides, kill_at=kill_at)
    assert result.returncode == -signal.SIGKILL, f"not killed at {kill_at}: {result.stderr[-2000:]}"
    assert not (run_dir / "summary.json").exists()
    return run_dir


def records(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the timing field, which differs between any two runs."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "samples_per_s"} for line in lines]


def tree(run_dir: Path) -> dict[str, str]:
    """Every file of a run directory and the sha256 of its bytes, but the lock file: it names the launch that
    holds the directory (a killed one's name stays until the next launch locks) and is no part of the run."""
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file() and p.name != LOCK}


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """Byte-identical exported weights (safetensors metadata included) and identical metrics records."""
    exports = [p.relative_to(reference) for d in ("model", "warmup") for p in sorted((reference / d).rglob("*"))]
    assert exports and [p.relative_to(run_dir) for d in ("model", "warmup")
                        for p in sorted((run_dir / d).rglob("*"))] == exports
    for name in exports:
        assert (run_dir / name).read_bytes() == (reference / name).read_bytes(), name
    assert records(run_dir) == records(reference)
    summary, expected = (json.loads((d / "summary.json").read_text()) for d in (run_dir, reference))
    for key in ("top1", "top5", "image_samples", "warmup_samples", "masked_acc", "skipped_samples", "identity"):
        assert summary[key] == expected[key], key


def error_line(run_dir: Path, shards: Path, *overrides: str) -> str:
    """The single line of a run refused before step 1 (no traceback)."""
    status, output = train_in_process(run_dir, shards, *overrides)
    lines = output.strip().splitlines()
    assert status == 1 and len(lines) == 1 and lines[0].startswith("vitwarm: error: "), output
    return lines[0]


def flip_bit(path: Path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, fmnist_shards) -> Path:
    run_dir = tmp_path_factory.mktemp("faults") / "reference"
    result = train(run_dir, fmnist_shards)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["phases"]["warmup"]["steps"], summary["phases"]["image"]["steps"]) == (25, 50)
    return run_dir


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, fmnist_shards) -> Path:
    """Killed while writing the checkpoint of image step 6: the newest complete one is image step 3, which
    is not a multiple of the log cadence (2)."""
    return killed(tmp_path_factory.mktemp("faults") / "interrupted", fmnist_shards,
                  f"checkpoint:files@{FIRST_IMAGE_SAVE + 1}")


@pytest.fixture
def copy_of(tmp_path):
    def copy(run_dir: Path) -> Path:
        return Path(shutil.copytree(run_dir, tmp_path / run_dir.name))
    return copy


def test_kill_during_a_background_checkpoint_write_resumes_bitwise(tmp_path, reference, fmnist_shards):
    """Checkpoints are written in a background thread while training goes on (vitwarm.run.saver). The write of
    image step 6 is held at its last file for 2 s, then the process is SIGKILLed: meanwhile training went on
    past step 6 (its records are in metrics.jsonl), the write never committed, and the resume continues from
    image step 3 to the uninterrupted run's weights and records."""
    run_dir = tmp_path / "run"
    result = train(run_dir, fmnist_shards, kill_at=f"checkpoint:files@{FIRST_IMAGE_SAVE + 1}",
                   env={"VITWARM_KILL_DELAY": "2"})
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    image_steps = [r["step"] for r in records(run_dir) if r.get("phase") == "image" and "loss" in r]
    assert max(image_steps) > 6, image_steps  # the step went on while step 6 was being written
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert "1-image-00000006" not in names and ".tmp-1-image-00000006" in names and "1-image-00000003" in names
    resumed = train(run_dir, fmnist_shards)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "(image step 3)" in resumed.stdout
    assert_same_run(run_dir, reference)


def test_resume_between_log_records_logs_what_the_uninterrupted_run_logged(interrupted, copy_of, reference,
                                                                            fmnist_shards):
    run_dir = copy_of(interrupted)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        ".tmp-1-image-00000006", "0-warmup-00000025", "1-image-00000003"]
    result = train(run_dir, fmnist_shards)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from" in result.stdout and "image step 3" in result.stdout
    assert_same_run(run_dir, reference)


def test_kill_while_the_resume_rewrites_metrics(interrupted, copy_of, reference, fmnist_shards):
    run_dir = copy_of(interrupted)
    killed(run_dir, fmnist_shards, "write:metrics.jsonl")  # the old file is still in place
    assert records(run_dir) == records(interrupted)
    result = train(run_dir, fmnist_shards)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_run(run_dir, reference)


def test_kill_while_writing_the_summary_then_while_resaving_the_final_checkpoint(tmp_path, reference, fmnist_shards):
    run_dir = killed(tmp_path / "run", fmnist_shards, "write:summary.json")
    # The evaluation records of the cut-off finish are in the log; the resumed run must not repeat them.
    killed(run_dir, fmnist_shards, "checkpoint:swap")  # re-saving the final checkpoint: new copy not yet in
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == [".old-1-image-00000050", ".tmp-1-image-00000050", "1-image-00000048"], names
    result = train(run_dir, fmnist_shards)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1-image-00000050 (image step 50)" in result.stdout  # the surviving old copy was used
    assert_same_run(run_dir, reference)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["1-image-00000048", "1-image-00000050"]


def test_rerunning_a_finished_run_changes_nothing(reference, copy_of, fmnist_shards):
    run_dir = copy_of(reference)
    before = tree(run_dir)
    result = train(run_dir, fmnist_shards)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "already finished" in result.stdout
    assert tree(run_dir) == before


@pytest.mark.parametrize(("file", "damage"), [("model.safetensors", "flip"), ("optimizer.pt", "truncate")])
def test_damaged_newest_checkpoint_falls_back_to_the_older_one(interrupted, copy_of, reference, fmnist_shards,
                                                               file, damage):
    run_dir = copy_of(interrupted)
    newest = run_dir / "checkpoints" / "1-image-00000003"
    if damage == "flip":
        flip_bit(newest / file)  # tensor data: safetensors itself would load it without a word
    else:
        (newest / file).write_bytes((newest / file).read_bytes()[:1000])
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"phase": "image", "st')  # a record the killed process was cut off in
    result = train(run_dir, fmnist_shards)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"skipping checkpoint {newest}: {file} does not match its recorded hash" in result.stdout
    assert "dropping unreadable line" in result.stdout and "metrics.jsonl" in result.stdout
    assert "0-warmup-00000025 (warmup step 25)" in result.stdout
    assert_same_run(run_dir, reference)


def test_no_checkpoint_verifies(interrupted, copy_of, fmnist_shards):
    run_dir = copy_of(interrupted)
    checkpoints = run_dir / "checkpoints"
    (checkpoints / "1-image-00000003" / "state.json").write_bytes(b"")
    flip_bit(checkpoints / "0-warmup-00000025" / "model.safetensors", offset=-4)
    before = tree(run_dir)
    line = error_line(run_dir, fmnist_shards)
    assert f"no checkpoint in {run_dir} verifies" in line
    assert "1-image-00000003: state.json is unreadable" in line
    assert "0-warmup-00000025: model.safetensors does not match its recorded hash" in line
    assert tree(run_dir) == before

    line = error_line(run_dir, fmnist_shards, f"resume={checkpoints / '0-warmup-00000025'}")
    assert "0-warmup-00000025" in line and "refusing to load it: model.safetensors does not match" in line
    assert tree(run_dir) == before


def test_damaged_warmup_export_is_rebuilt_at_the_phase_switch(tmp_path, reference, fmnist_shards):
    run_dir = killed(tmp_path / "run", fmnist_shards, f"checkpoint:files@{FIRST_IMAGE_SAVE}")
    flip_bit(run_dir / "warmup" / "model.safetensors")
    result = train(run_dir, fmnist_shards)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "warmup/model.safetensors does not match its recorded hash" in result.stdout
    assert "redoing the end of phase warmup" in result.stdout
    assert_same_run(run_dir, reference)


@pytest.mark.parametrize("change", ["seed=1", "budget.epochs=3", "warmup.fraction=0.3"])
def test_changed_identity_is_refused_and_changes_nothing(interrupted, copy_of, fmnist_shards, change):
    run_dir = copy_of(interrupted)
    before = tree(run_dir)
    key, value = change.split("=")
    line = error_line(run_dir, fmnist_shards, change)
    assert "belongs to a run with other settings" in line and f"{key}: " in line and f"-> {value}" in line
    assert f"resume_allow_changed=[{key}]" in line
    assert tree(run_dir) == before


def test_foreign_checkpoint_of_the_same_architecture_is_refused(tmp_path, interrupted, fmnist_shards):
    other = killed(tmp_path / "other", fmnist_shards, "checkpoint:files@2", "seed=1")
    line = error_line(tmp_path / "mine", fmnist_shards, f"resume={other / 'checkpoints' / '0-warmup-00000003'}")
    assert "0-warmup-00000003 belongs to a run with other settings" in line and "seed: 1 -> 0" in line
    assert not (tmp_path / "mine").exists()


def test_a_deliberate_change_is_logged_as_an_event(interrupted, copy_of, fmnist_shards):
    run_dir = copy_of(interrupted)
    result = train(run_dir, fmnist_shards, "train.lr=0.001", "resume_allow_changed=[train.lr]")
    assert result.returncode == 0, result.stderr[-3000:]
    events = [r for r in records(run_dir) if r.get("event") == "config_changed"]
    assert events == [{"event": "config_changed", "phase": "image", "step": 3, "changes": {"train.lr": [0.002, 0.001]}}]
    assert json.loads((run_dir / "summary.json").read_text())["identity"]["train.lr"] == 0.001
    # Allowing a key that is not part of the identity is a typo, not a change.
    line = error_line(run_dir, fmnist_shards, "train.lr=0.001", "resume_allow_changed=[trian.lr]")
    assert "resume_allow_changed names trian.lr" in line


def test_lost_metrics_records_are_refused(interrupted, copy_of, fmnist_shards):
    run_dir = copy_of(interrupted)
    (run_dir / "metrics.jsonl").write_text("")
    line = error_line(run_dir, fmnist_shards)
    assert f"{run_dir / 'metrics.jsonl'} holds 0 records but the checkpoint was taken after" in line


def corrupt_shards(shards: Path, out: Path, per_shard: int = 3) -> Path:
    """A copy of the shard set whose train shards each hold ``per_shard`` undecodable images."""
    shutil.copytree(shards, out)
    for shard in sorted(out.glob("*train*.tar")):
        with tarfile.open(shard) as tar:
            members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
        damaged = 0
        with tarfile.open(shard, "w") as tar:
            for member, data in members:
                if member.name.endswith(".png") and damaged < per_shard:
                    data, damaged = b"not a png", damaged + 1
                    member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
    return out


def test_skipped_samples_are_counted_over_processes_and_resumes(tmp_path, fmnist_shards):
    # One bad image per shard, each shard's first: the epoch's 31 x 64 = 1984 samples (tests/tiny.yaml, one
    # worker) fit in the 1992 good ones, so the worker opens every shard and never starts a second pass.
    shards = corrupt_shards(fmnist_shards, tmp_path / "shards", per_shard=1)
    image_only = ("warmup.fraction=0", "budget.epochs=1", "checkpoint.every_steps=5")
    whole = train(tmp_path / "whole", shards, *image_only)
    assert whole.returncode == 0, whole.stderr[-3000:]
    corrupt = len(list(shards.glob("*train*.tar")))
    expected = json.loads((tmp_path / "whole" / "summary.json").read_text())["skipped_samples"]
    assert expected == corrupt  # one pass over every shard: each bad sample met once

    resumed = killed(tmp_path / "resumed", shards, "checkpoint:files@3", *image_only)
    assert train(resumed, shards, *image_only).returncode == 0
    assert json.loads((resumed / "summary.json").read_text())["skipped_samples"] == expected

    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / "recipes/accelerate/cpu_ddp.yaml"), "--main_process_port", str(free_port()),
               "-m", "vitwarm.train", "--config", str(TINY), f"data.source={shards}",
               f"run.dir={tmp_path / 'ddp'}", *image_only]
    ddp = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    # Each rank reads its half of the shards, so the sum over both ranks meets every bad sample (a second
    # pass over a rank's shards may meet one again); rank 0 alone would count about half.
    assert json.loads((tmp_path / "ddp" / "summary.json").read_text())["skipped_samples"] >= corrupt
