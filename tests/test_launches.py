"""Two processes under ``accelerate launch`` (gloo on the CPU) the way clusters stop them: SIGTERM to the launcher,
SIGKILL of the launcher's process group, a failing peer; and two one-process "machines" on 127.0.0.1, one of
them killed. Real launches, real signals; every result is compared with one 2-process launch.

Runs are tests/tiny.yaml's image phase alone (31 steps), a record per step. The moment to signal is reached
on purpose: a training record (or a checkpoint) of the image phase on disk.
"""

from __future__ import annotations

import io
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import psutil
import pytest

from vitwarm.seeds import derive_seed

from helpers import ENV, PER_STEP_LOGS, ROOT, assert_same_weights_and_records, free_port, train_command

pytestmark = pytest.mark.slow

OVERRIDES = (*PER_STEP_LOGS, "warmup.fraction=0", "budget.epochs=1")
STOPPED = 75


def launch_command(run_dir: Path, shards: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(ROOT / "recipes/accelerate/cpu_ddp.yaml"), "--main_process_port", str(free_port()),
            *train_command(run_dir, shards, *OVERRIDES, *overrides)[1:]]


def launch(run_dir: Path, shards: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(launch_command(run_dir, shards, *overrides), cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, fmnist_shards) -> Path:
    run_dir = tmp_path_factory.mktemp("launches") / "reference"
    result = launch(run_dir, fmnist_shards)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def wait_for(ready, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while not ready():
        assert process.poll() is None, "the run ended before the moment was reached"
        assert time.monotonic() < deadline, "the run never reached the moment"
        time.sleep(0.01)


def training_record_written(run_dir: Path):
    def ready() -> bool:
        metrics = run_dir / "metrics.jsonl"
        return metrics.exists() and '"phase": "image", "step"' in metrics.read_text()
    return ready


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_sigterm_to_the_launcher_stops_both_processes_at_one_saved_step(tmp_path, reference, fmnist_shards, stop):
    run_dir = tmp_path / "run"
    overrides = ("checkpoint.every_steps=1000",)  # a checkpoint inside the phase can only be the stop's
    process = subprocess.Popen(launch_command(run_dir, fmnist_shards, *overrides), cwd=ROOT, env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for(training_record_written(run_dir), process)
    # The launcher's group (a terminal's Ctrl-C): the launcher forwards the signal to its workers, which run in
    # sessions of their own.
    os.killpg(process.pid, stop)
    out, err = process.communicate(timeout=60)
    # torch's launcher ends as the signal it got says (128 + 15, 128 + 2), whatever its workers returned (75 each).
    assert process.returncode == 128 + stop, err[-3000:]
    stops = [line for line in err.splitlines() if line.startswith(f"vitwarm: stopped on {stop.name} at image step ")]
    assert len(stops) == 1 and "internal error" not in err, err[-3000:]
    step = int(re.search(r"image step (\d+)", stops[0]).group(1))
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == [f"0-image-{step:08d}"]
    assert not (run_dir / "summary.json").exists()
    resumed = launch(run_dir, fmnist_shards, *overrides)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"(image step {step})" in resumed.stdout
    assert_same_weights_and_records(run_dir, reference)


def test_workers_die_with_their_launcher_and_the_relaunch_resumes(tmp_path, reference, fmnist_shards):
    run_dir = tmp_path / "run"
    command = launch_command(run_dir, fmnist_shards, "checkpoint.every_steps=3")
    process = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    wait_for(lambda: list(run_dir.glob("checkpoints/0-image-*")), process)
    # Every process the launcher started, the workers' DataLoader workers included.
    started = psutil.Process(process.pid).children(recursive=True)
    assert sum("vitwarm.train" in " ".join(p.cmdline()) for p in started) >= 2
    os.killpg(process.pid, signal.SIGKILL)  # the launcher's group: its workers run in sessions of their own
    process.wait()
    gone, alive = psutil.wait_procs(started, timeout=30)
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"still running 30 s after their launcher died: {alive}"
    assert not (run_dir / "summary.json").exists()
    resumed = subprocess.run(launch_command(run_dir, fmnist_shards, "checkpoint.every_steps=3"), cwd=ROOT, env=ENV,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout
    assert_same_weights_and_records(run_dir, reference)


def test_a_failing_peer_is_the_root_cause_and_the_survivor_stops_quietly(tmp_path, fmnist_shards):
    # The first sample of every shard rank 1 reads in epoch 0 is not an image (vitwarm.data.streams: the
    # shards permuted by (seed 0, epoch 0), rank r takes every second one from r); rank 0's shards are whole.
    shards = Path(shutil.copytree(fmnist_shards, tmp_path / "shards"))
    train_shards = sorted(shards.glob("fashion_mnist-train-*.tar"))
    order = list(range(len(train_shards)))
    random.Random(derive_seed(0, "shards", 0)).shuffle(order)
    for index in order[1::2]:
        with tarfile.open(train_shards[index]) as tar:
            members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
        with tarfile.open(train_shards[index], "w") as tar:
            for i, (member, data) in enumerate(members):
                if i == 0:
                    data = b"not a png"
                    member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
    result = launch(tmp_path / "run", shards, "data.strict=true")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    # A process's line may follow the other's progress bar on the same line of the shared stderr.
    errors = re.findall(r"vitwarm: error: [^\r\n]*", output)
    assert len(errors) == 1 and errors[0].startswith("vitwarm: error: process 1: ") and "sample train_" in errors[0], \
        output[-3000:]
    assert re.findall(r"vitwarm: rank \d stopping: [^\r\n]*", output) == [
        "vitwarm: rank 0 stopping: a peer process failed (see its message)"], output[-3000:]
    assert "internal error" not in output and "Connection closed" not in output.split("Root Cause")[-1], output[-3000:]
    # The launcher's report names the failing rank's line as the root cause.
    cause = output.split("Root Cause", 1)[-1].split("Other Failures", 1)[0]
    assert "sample train_" in cause, output[-3000:]


def machine_command(run_dir: Path, shards: Path, machine_rank: int, port: int, *overrides: str) -> list[str]:
    """recipes/accelerate/multinode.yaml's documented command with the host parts filled in, for one of two
    one-process "machines" on this host (fp32 on the CPU instead of the documented precision=bf16)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(ROOT / "recipes/accelerate/multinode.yaml"), "--num_machines", "2", "--num_processes", "2",
            "--machine_rank", str(machine_rank), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
            *train_command(run_dir, shards, *OVERRIDES, *overrides)[1:]]


def start_machines(run_dir: Path, shards: Path, *overrides: str) -> list[subprocess.Popen]:
    port = free_port()
    return [subprocess.Popen(machine_command(run_dir, shards, rank, port, *overrides), cwd=ROOT, env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
            for rank in (0, 1)]


def test_two_machines_on_one_host_train_like_one_machine_and_resume_after_one_is_killed(tmp_path, reference,
                                                                                         fmnist_shards):
    run_dir = tmp_path / "run"
    machines = start_machines(run_dir, fmnist_shards, "checkpoint.every_steps=3")
    wait_for(lambda: list(run_dir.glob("checkpoints/0-image-*")), machines[0])
    os.killpg(machines[1].pid, signal.SIGKILL)  # machine 1: its launcher's group; its worker dies with it
    machines[1].wait()
    out, _ = machines[0].communicate(timeout=120)  # machine 0 loses its peer and stops
    assert machines[0].returncode != 0 and "internal error" not in out, out[-3000:]
    assert not (run_dir / "summary.json").exists()

    machines = start_machines(run_dir, fmnist_shards, "checkpoint.every_steps=3")
    outputs = [machine.communicate(timeout=600)[0] for machine in machines]
    assert [machine.returncode for machine in machines] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "resuming from" in outputs[0] and "2 process(es)" in outputs[0]
    assert_same_weights_and_records(run_dir, reference)
