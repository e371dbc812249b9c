"""One process: a polite stop on SIGTERM (and on the sweep's Slurm warning) that keeps the figure of the last
evaluation, and one writer per run directory; real runs, real signals.

Every run is a real ``python -m vitwarm.train`` subprocess on tests/tiny.yaml (25 warm-up steps, then 50 image
steps) with a record per step and no cadence checkpoint (``checkpoint.every_steps=1000``): a checkpoint in the
image phase can only be the stop's. The moment to signal is reached on purpose: a metrics record of the image
phase shows that the run is training there; a first launch is held there with SIGSTOP while a second one
starts.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from vitwarm.config import load_config
from vitwarm.run.curves import curves, draw_curves
from vitwarm.run.rundir import identity
from vitwarm.sweeps.launch import SlurmJob

from helpers import (
    ENV,
    PER_STEP_LOGS,
    ROOT,
    TINY,
    assert_same_weights_and_records,
    train,
    train_command,
    train_records,
    trained,
)

pytestmark = pytest.mark.slow

OVERRIDES = (*PER_STEP_LOGS, "checkpoint.every_steps=1000")
STOPPED = 75


@pytest.fixture(scope="module")
def reference(tmp_path_factory, fmnist_shards) -> Path:
    return trained(tmp_path_factory.mktemp("stop") / "reference", fmnist_shards, *OVERRIDES)


def image_record_written(run_dir: Path):
    """True once metrics.jsonl holds a training record of the image phase."""
    def ready() -> bool:
        metrics = run_dir / "metrics.jsonl"
        return metrics.exists() and '"phase": "image", "step"' in metrics.read_text()
    return ready


def wait_for(ready, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while not ready():
        assert process.poll() is None, f"the run ended before the moment was reached: {process.communicate()}"
        assert time.monotonic() < deadline, "the run never reached the moment"
        time.sleep(0.01)


def descendants(pid: int) -> list[int]:
    """The processes ``pid`` started, and theirs (its DataLoader workers), from /proc."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [c for child in map(int, children) for c in (child, *descendants(child))]


@pytest.mark.parametrize("to", ["the trainer", "every process"])
def test_sigterm_saves_the_step_reached_and_the_same_command_resumes(tmp_path, reference, fmnist_shards, to):
    """SIGTERM to the trainer (a user's kill), or to every process of it at once, its loader workers included
    (what SLURM does at preemption and at the time limit): the workers ignore it, the trainer stops politely."""
    run_dir = tmp_path / "run"
    command = train_command(run_dir, fmnist_shards, *OVERRIDES)
    process = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(image_record_written(run_dir), process)
    workers = descendants(process.pid)
    assert workers or to == "the trainer"  # tiny.yaml's image loader has a worker
    for pid in [process.pid, *(workers if to == "every process" else [])]:
        os.kill(pid, signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == STOPPED, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("vitwarm:")]  # besides the progress bars
    assert "Traceback" not in err and len(lines) == 1, err[-3000:]
    assert lines[0].startswith("vitwarm: stopped on SIGTERM at image step "), lines
    assert "run the same command to resume" in lines[0]
    step = int(re.search(r"image step (\d+)", lines[0]).group(1))
    assert 0 < step < 50
    saved = run_dir / "checkpoints" / f"1-image-{step:08d}"
    assert saved.is_dir() and json.loads((saved / "state.json").read_text())["step"] == step
    assert not (run_dir / "summary.json").exists()
    # No record of the stop: the records so far are the uninterrupted run's first ones.
    assert train_records(run_dir) == train_records(reference)[:len(train_records(run_dir))]

    resumed = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"(image step {step})" in resumed.stdout
    assert_same_weights_and_records(run_dir, reference)


def test_a_stopped_run_keeps_the_figure_of_its_last_evaluation(tmp_path, fmnist_shards):
    run_dir = tmp_path / "run"
    process = subprocess.Popen(train_command(run_dir, fmnist_shards, *OVERRIDES), cwd=ROOT, env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = run_dir / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and '"event": "eval"' in metrics.read_text(), process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == STOPPED, process.stderr.read()[-3000:]
    # curves.png is the drawing of the records up to the last evaluation (vitwarm.run.curves).
    records = train_records(run_dir)
    last_eval = max(i for i, r in enumerate(records) if r.get("event") == "eval")
    drawn = curves(records[:last_eval + 1], "validation", rise=20.0)
    assert drawn.warmup_loss and drawn.image_loss and drawn.val_top1
    assert draw_curves(drawn, tmp_path / "expected.png").read_bytes() == (run_dir / "curves.png").read_bytes()


def test_a_second_launch_into_a_directory_in_use_is_refused(tmp_path, reference, fmnist_shards):
    run_dir = tmp_path / "run"
    command = train_command(run_dir, fmnist_shards, *OVERRIDES)
    first = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(image_record_written(run_dir), first)
    first.send_signal(signal.SIGSTOP)  # held mid-run (and holding the lock) while the second one starts
    try:
        second = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    finally:
        first.send_signal(signal.SIGCONT)
    lines = second.stderr.strip().splitlines()
    assert second.returncode == 1 and len(lines) == 1, second.stderr[-3000:]
    assert lines[0].startswith(f"vitwarm: error: run directory {run_dir} is in use by another launch (host ")
    assert f"pid {first.pid}, since " in lines[0]
    assert first.wait(timeout=600) == 0, first.stderr.read()[-3000:]
    # The first launch finished exactly like the uninterrupted run: no record duplicated, the same weights.
    assert_same_weights_and_records(run_dir, reference)
    # Released: the lock file is empty, and the next launch finds the run finished.
    assert (run_dir / ".lock").read_text() == ""
    again = train(run_dir, fmnist_shards, *OVERRIDES)
    assert again.returncode == 0 and "already finished" in again.stdout, again.stderr[-3000:]


def test_the_sweeps_slurm_job_saves_before_the_requeue_and_the_requeued_job_finishes(tmp_path, reference,
                                                                                     fmnist_shards, monkeypatch):
    # What submitit does on its warning, without Slurm: the job's checkpoint() first lets the trainer save
    # (SlurmJob.finish_save), then the requeued job (a new SlurmJob of the same command) runs.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the trainer inherits this process's environment, as on a node
    run_dir = tmp_path / "run"
    command = train_command(run_dir, fmnist_shards, *OVERRIDES)
    run_identity = identity(load_config(str(TINY), command[command.index("--config") + 2:]))
    job = SlurmJob(command, run_dir, run_identity)
    failed = []
    thread = threading.Thread(target=lambda: failed.append(pytest.raises(RuntimeError, job)))
    thread.start()
    deadline = time.monotonic() + 300
    while job.process is None or not image_record_written(run_dir)():
        assert thread.is_alive() and time.monotonic() < deadline, "the run never reached the image phase"
        time.sleep(0.01)
    assert job.finish_save() == STOPPED
    thread.join()
    assert "failed (exit 75)" in str(failed[0].value)
    assert list(run_dir.glob("checkpoints/1-image-*")), "no checkpoint of the step reached"
    assert SlurmJob(command, run_dir, run_identity)() == str(run_dir)
    assert "run.stop_signal=SIGUSR2" in (run_dir / "launch.log").read_text()
    assert_same_weights_and_records(run_dir, reference)


def test_ctrl_c_is_the_polite_stop_and_the_same_command_resumes(tmp_path, reference, fmnist_shards):
    # Ctrl-C at a terminal signals the terminal's foreground process group: the trainer's, here.
    run_dir = tmp_path / "run"
    command = train_command(run_dir, fmnist_shards, *OVERRIDES)
    process = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    wait_for(image_record_written(run_dir), process)
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == STOPPED, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("vitwarm:")]
    assert "Traceback" not in err and len(lines) == 1, err[-3000:]
    assert lines[0].startswith("vitwarm: stopped on SIGINT at image step ") and "run the same command" in lines[0]
    step = int(re.search(r"image step (\d+)", lines[0]).group(1))
    resumed = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0 and f"(image step {step})" in resumed.stdout, resumed.stderr[-3000:]
    assert_same_weights_and_records(run_dir, reference)


def test_a_second_ctrl_c_during_a_save_stops_at_once_and_the_previous_checkpoint_is_used(tmp_path, reference,
                                                                                         fmnist_shards):
    # Two Ctrl-C land while the image phase's end checkpoint is written (after its files, before its
    # state.json): the first asks for the polite stop, the second stops at once.
    run_dir = tmp_path / "run"
    interrupted = train(run_dir, fmnist_shards, *OVERRIDES, kill_at="checkpoint:files@2",
                        signals="SIGINT,SIGINT")
    assert interrupted.returncode == 130, interrupted.stderr[-3000:]
    lines = [line for line in interrupted.stderr.splitlines() if line.startswith("vitwarm:")]
    assert "Traceback" not in interrupted.stderr and len(lines) == 1, interrupted.stderr[-3000:]
    assert lines[0].startswith("vitwarm: interrupted by Ctrl-C; stopped at once"), lines
    # The save under way is gone, nothing half-written is left; the warm-up's end is the newest checkpoint.
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["0-warmup-00000025"]
    assert not [p for p in run_dir.rglob(".tmp-*")], list(run_dir.rglob(".tmp-*"))
    resumed = subprocess.run(train_command(run_dir, fmnist_shards, *OVERRIDES), cwd=ROOT, env=ENV,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0 and "(warmup step 25)" in resumed.stdout, resumed.stderr[-3000:]
    assert_same_weights_and_records(run_dir, reference)
