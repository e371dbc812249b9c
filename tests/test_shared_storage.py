"""When the world moves under a run on shared cluster storage: a file system that fills up, links planted in a
run directory, two launchers on one sweep directory, a data set rewritten between a stop and a resume.

A full disk is a real one: the run directory lies on a small tmpfs that the test mounts (as root; skipped
where mounting is not allowed), and the trainer, a real ``python -m vitwarm.train`` on tests/tiny.yaml, stops
itself (SIGSTOP) at a named point of a write (vitwarm.atomic.fault_point) while the test fills the file
system, then continues into the full disk. Two launchers are real ``python -m vitwarm.cli.sweep --launcher
local`` processes started at once on one sweep directory.
"""

from __future__ import annotations

import errno
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from vitwarm.data import ensure_fmnist_shards
from vitwarm.run.rundir import LOCK, WRITTEN
from vitwarm.sweeps.launch import LOG_FILE, run_command

from helpers import (
    ENV,
    ROOT,
    TINY,
    assert_same_weights_and_records,
    train,
    train_command,
    train_in_process,
    trained,
)

pytestmark = pytest.mark.slow


def sweep_command(out: Path, shards: Path) -> list[str]:
    return [sys.executable, "-m", "vitwarm.cli.sweep", "--base", str(TINY), "--grid", "seed=0,1",
            "--set", f"data.source={shards}", "--set", "warmup.fraction=0", "--set", "budget.epochs=1",
            "--out", str(out), "--launcher", "local", "--entry", f"{sys.executable} -m vitwarm.train"]


def test_two_launchers_on_one_sweep_share_its_runs_and_each_run_runs_once(tmp_path, fmnist_shards):
    out = tmp_path / "sweep"
    env = ENV | {"PYTHONPATH": str(ROOT)}
    launchers = [subprocess.Popen(sweep_command(out, fmnist_shards), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [launcher.communicate(timeout=600)[0] for launcher in launchers]
    assert [launcher.returncode for launcher in launchers] == [0, 0], outputs
    ran, left = [], []
    for output in outputs:
        summary = re.search(r"sweep .*: (\d+) ran ok, 0 failed, 0 skipped \(already finished\)"
                            r"(?:, (\d+) left to another launcher)?$", output, re.MULTILINE)
        assert summary, output
        ran.append(int(summary[1]))
        left.append(int(summary[2] or 0))
        named = re.findall(r"^  left to another launcher: (seed=\d) \((held by host .*, pid \d+, since .*|finished "
                           r"by another launcher)\)$", output, re.MULTILINE)
        assert len(named) == left[-1], output
    assert [r + n for r, n in zip(ran, left)] == [2, 2] and sum(left) >= 1, outputs
    for seed in (0, 1):
        run_dir = out / f"seed={seed}"
        assert json.loads((run_dir / "summary.json").read_text())["identity"]["seed"] == seed
        steps = [(r["phase"], r["step"]) for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
                 if "loss" in r and "event" not in r]
        assert steps and len(steps) == len(set(steps)), f"records repeated in {run_dir}"  # one set of records
        assert not list(run_dir.glob(".tmp-*")), "a temporary file left behind"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, fmnist_shards) -> Path:
    return trained(tmp_path_factory.mktemp("storage") / "reference", fmnist_shards)


@pytest.fixture
def small_fs(tmp_path):
    """A 16 MB tmpfs (a tiny run needs about 3 MB), unmounted after the test."""
    mount = tmp_path / "fs"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root and a kernel that lets this process mount): "
                    f"{result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(folder: Path) -> None:
    """Write zeros into ``folder``'s file system until it is full."""
    with open(folder / "filler", "wb") as f:
        try:
            while True:
                f.write(bytes(1 << 16))
                f.flush()
        except OSError as err:
            assert err.errno == errno.ENOSPC, err


def wait_stopped(process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while psutil.Process(process.pid).status() != psutil.STATUS_STOPPED:
        assert process.poll() is None and time.monotonic() < deadline, "the run never reached the fault point"
        time.sleep(0.01)


# Where the disk fills (fault point, in the order the run passes it) and the file whose write then fails:
# the optimizer state (torch.save) of the first warm-up checkpoint and of the first image checkpoint (the
# 11th weights file: 8 warm-up checkpoints, the warm-up export, the warm-up's end checkpoint, then this one),
# and the final model's export.
MOMENTS = {
    "warm-up checkpoint": ("write:model.safetensors@1", "checkpoints/.tmp-0-warmup-00000003/optimizer.pt"),
    "image checkpoint": ("write:model.safetensors@11", "checkpoints/.tmp-1-image-00000003/optimizer.pt"),
    "exports": ("export:model", "model"),
}


@pytest.mark.parametrize("moment", MOMENTS)
def test_a_full_disk_is_one_line_and_the_same_command_finishes_once_there_is_room(small_fs, reference,
                                                                                 fmnist_shards, moment):
    fault, failing = MOMENTS[moment]
    run_dir = small_fs / "run"
    log = small_fs.parent / "stderr.txt"
    with open(log, "w") as stderr:
        env = ENV | {"VITWARM_KILL_AT": fault, "VITWARM_FAULT_SIGNALS": "SIGSTOP"}
        process = subprocess.Popen(train_command(run_dir, fmnist_shards), cwd=ROOT, stdout=subprocess.DEVNULL,
                                   stderr=stderr, env=env)
        wait_stopped(process)
        fill(small_fs)
        process.send_signal(signal.SIGCONT)
        assert process.wait(timeout=300) == 1
    err = log.read_text()
    lines = [line for line in err.splitlines() if line.startswith("vitwarm:")]
    assert "Traceback" not in err and len(lines) == 1, err[-3000:]
    assert lines[0].startswith(f"vitwarm: error: {run_dir / failing}: No space left on device (")
    assert re.search(r"\(\d+\.\d MB free on its file system\); nothing half-written is kept", lines[0]), lines[0]
    assert not list(run_dir.rglob(".tmp-*")) and not list(run_dir.glob(".model.tmp-*")), "temporary files left"
    assert not (run_dir / "summary.json").exists()
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_fs)], check=True)  # the disk is grown
    resumed = train(run_dir, fmnist_shards)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "warning" not in resumed.stdout  # room enough now for a checkpoint and the exports
    assert_same_weights_and_records(run_dir, reference)


def test_a_data_set_rewritten_between_a_stop_and_a_resume_is_refused_unless_allowed(tmp_path, fmnist_src):
    shards, run_dir = tmp_path / "shards", tmp_path / "run"

    def rewrite(fraction: float, seed: int) -> None:
        """The shard set at the same path, written anew (200 or fewer samples per class)."""
        shutil.rmtree(shards, ignore_errors=True)
        ensure_fmnist_shards(shards, src=fmnist_src, fraction=fraction, val_size=500, shard_size=250, seed=seed,
                             progress=False)

    rewrite(200 / 5950, seed=0)
    assert train(run_dir, shards, kill_at="checkpoint:files@12").returncode == -signal.SIGKILL
    kept = {name: (run_dir / name).read_bytes() for name in ("config.yaml", "metrics.jsonl")}
    # Another subset; then the first one's counts and file names, drawn with another seed (other images, so
    # some shards of other sizes).
    for fraction, seed, changed in ((150 / 5950, 0, "train: 2000 -> 1500 samples, 8 -> 6 shard files"),
                                    (200 / 5950, 1, "shard file(s) of other size or content, e.g. fashion_mnist-")):
        rewrite(fraction, seed)
        status, output = train_in_process(run_dir, shards)
        lines = output.strip().splitlines()
        assert status == 1 and len(lines) == 1, output
        assert lines[0].startswith(f"vitwarm: error: {run_dir}/checkpoints/1-image-") and changed in lines[0], lines
        assert "was trained on other data" in lines[0] and "resume_allow_changed=[data.source]" in lines[0]
        assert {name: (run_dir / name).read_bytes() for name in kept} == kept  # nothing changed
    allowed = train(run_dir, shards, "resume_allow_changed=[data.source]")
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"event"' in line]
    [changes] = [e["changes"] for e in events if e["event"] == "config_changed"]
    assert list(changes) == ["data"] and changes["data"][0].startswith("train: "), changes


# Every name a run writes in its directory (vitwarm.run.rundir.WRITTEN, the lock, the trackers' folder), planted
# as a link to a file or folder of the user's outside it; the folders' names are linked to a folder.
FOLDERS = ("checkpoints", "warmup", "model", "vitwarm")


@pytest.mark.parametrize("name", [*WRITTEN, LOCK, "vitwarm"])
def test_a_name_planted_as_a_link_is_refused_in_one_line_and_its_target_is_unchanged(tmp_path, fmnist_shards, name):
    run_dir, target = tmp_path / "run", tmp_path / "users" / name
    run_dir.mkdir()
    if name in FOLDERS:
        target.mkdir(parents=True)
        (target / "notes.txt").write_text("the user's own notes\n")
    else:
        target.parent.mkdir()
        target.write_text("the user's own text\n")
    before = {p: p.read_bytes() for p in sorted(target.parent.rglob("*")) if p.is_file()}
    (run_dir / name).symlink_to(target, target_is_directory=name in FOLDERS)
    trackers = ("log.trackers=[tensorboard]",) if name == "vitwarm" else ()
    status, output = train_in_process(run_dir, fmnist_shards, *trackers)
    lines = output.strip().splitlines()
    assert status == 1 and len(lines) == 1, output
    planted = f"vitwarm: error: {run_dir / name} is a symbolic link (to {target}), not the run's "
    assert lines[0].startswith(planted), lines
    assert {p: p.read_bytes() for p in sorted(target.parent.rglob("*")) if p.is_file()} == before
    assert sorted(p.name for p in run_dir.iterdir()) == sorted({name, LOCK})  # nothing else written


def test_the_sweep_launcher_appends_to_no_planted_log(tmp_path):
    target = tmp_path / "users_file"
    target.write_text("the user's own text\n")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOG_FILE).symlink_to(target)
    with pytest.raises(OSError, match="Too many levels of symbolic links") as refused:
        run_command(["true"], tmp_path / "run" / LOG_FILE)
    assert refused.value.filename == str(tmp_path / "run" / LOG_FILE)
    assert target.read_text() == "the user's own text\n"


def test_too_little_room_for_a_checkpoint_and_the_exports_is_a_warning_at_the_start(small_fs, fmnist_shards):
    subprocess.run(["mount", "-o", "remount,size=1m", str(small_fs)], check=True)  # the tiny run saves ~1.5 MB
    result = train(small_fs / "run", fmnist_shards)
    warnings = [line for line in result.stdout.splitlines() if line.startswith("vitwarm: warning: ")]
    assert len(warnings) == 1 and re.match(rf"vitwarm: warning: {small_fs / 'run'} has 1\.0 MB free, less than the "
                                           r"1\.\d MB one checkpoint and the exports take", warnings[0]), warnings
    assert result.returncode == 1 and "No space left on device" in result.stderr  # and then, as it warned
