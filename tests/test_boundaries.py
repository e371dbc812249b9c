"""Hostile values at the boundaries: overrides forwarded by the SLURM script, shard and split names that would
write outside --out, _info.json filenames that point outside their root, and the published folders' modes."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vitwarm.data import DataError, read_dataset_info, write_folder_shards

from helpers import ROOT

SBATCH = ROOT / "recipes" / "accelerate" / "slurm.sbatch"
MAKE_SHARDS = [sys.executable, str(ROOT / "tools" / "make_shards.py")]
HOSTILE = ["seed=1;touch F", "run.dir=runs/a b", "log.every_steps=$(touch G)", "x='y' \"z\"", "`touch H`"]


# Many hostnames, as on a large job: the script must read them all, not die of SIGPIPE. A requeue is recorded.
SCONTROL = """if [[ $1 == requeue ]]; then echo "$@" >> "$OUT/events"; exit 0; fi
echo node-a; for i in $(seq 20000); do echo node-$i; done"""


def fake_command(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/bash\n" + body + "\n")
    path.chmod(0o755)


def test_slurm_script_forwards_overrides_as_arguments(tmp_path):
    """The script's real bash under fake srun / scontrol / accelerate that record what they are given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_command(bin_dir, "srun", 'while [[ $1 == --* ]]; do echo "$1" >> "$OUT/srun"; shift; done; '
                                  'SLURM_NODEID=1 exec "$@"')
    fake_command(bin_dir, "scontrol", SCONTROL)
    fake_command(bin_dir, "accelerate", 'printf "%s\\0" "$@" > "$ARGS_OUT"; echo "$NCCL_DEBUG" > "$OUT/nccl"')
    work = tmp_path / "work"  # the job's working directory: where `touch F` would land
    work.mkdir()
    env = os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}", "ARGS_OUT": str(tmp_path / "args"),
                        "OUT": str(tmp_path), "SLURM_JOB_NODELIST": "node-[a-b]", "SLURM_NNODES": "2",
                        "SLURM_JOB_ID": "123457", "SLURM_CPUS_PER_TASK": "64"}
    env.pop("NCCL_DEBUG", None)
    result = subprocess.run(["bash", str(SBATCH), "recipes/imagenet/vit_base_kdyck.yaml", *HOSTILE], cwd=work,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    args = (tmp_path / "args").read_text().split("\0")[:-1]
    # The port follows the job id (15000 + 123457 % 15000): two jobs on one node do not share it.
    assert args == ["launch", "--config_file", "recipes/accelerate/multinode.yaml", "--num_machines", "2",
                    "--num_processes", "16", "--machine_rank", "1", "--main_process_ip", "node-a",
                    "--main_process_port", "18457", "-m", "vitwarm.train", "--config",
                    "recipes/imagenet/vit_base_kdyck.yaml", *HOSTILE]
    assert sorted(os.listdir(work)) == [], "an override was executed"
    # The step gets the job's CPUs (newer SLURM does not pass sbatch's on to srun); NCCL reports warnings.
    assert (tmp_path / "srun").read_text().split() == ["--kill-on-bad-exit=1", "--cpus-per-task=64"]
    assert (tmp_path / "nccl").read_text().strip() == "WARN"


@pytest.mark.parametrize("signal_", ["USR1", "TERM"])
def test_slurm_script_requeues_after_the_trainers_saved(tmp_path, signal_):
    """The real script under fake commands, with the signals SLURM sends: USR1 to the batch script 120 s before
    the time limit (--signal=B:USR1@120), which passes SIGTERM on to the job step; or, at preemption, SIGTERM to
    the batch script and to every process of the step at once. Either way the step's launcher stops the way
    the trainer does (SIGTERM, its stop signal: saves, exits 75), and only then is the job requeued."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_command(bin_dir, "srun", 'while [[ $1 == --* ]]; do shift; done; SLURM_NODEID=0 exec "$@"')
    fake_command(bin_dir, "scontrol", SCONTROL)
    # The step's processes: a "launcher" that stops on SIGTERM the way the trainer does, a moment after it.
    fake_command(bin_dir, "accelerate", 'trap \'sleep 1; echo saved >> "$OUT/events"; exit 75\' TERM\n'
                                        'echo $$ > "$OUT/step_pid"\nwhile true; do sleep 0.1; done')
    fake_command(bin_dir, "scancel", 'echo "scancel $*" >> "$OUT/events"; kill -TERM "$(cat "$OUT/step_pid")"')
    env = os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}", "OUT": str(tmp_path),
                        "SLURM_JOB_NODELIST": "node-a", "SLURM_NNODES": "1", "SLURM_JOB_ID": "7"}
    script = subprocess.Popen(["bash", str(SBATCH), "recipes/imagenet/vit_base_kdyck.yaml"], cwd=tmp_path, env=env)
    deadline = time.monotonic() + 60
    while not (tmp_path / "step_pid").exists():
        assert script.poll() is None and time.monotonic() < deadline, "the job step never started"
        time.sleep(0.05)
    script.send_signal(signal.Signals[f"SIG{signal_}"])
    if signal_ == "TERM":  # preemption: SLURM signals the step's processes too
        os.kill(int((tmp_path / "step_pid").read_text()), signal.SIGTERM)
    assert script.wait(timeout=60) == 0
    # In this order: the stop signal passed on (by the script on the warning, by SLURM at preemption), the
    # save, and only then the requeue.
    passed_on = ["scancel --signal=TERM 7"] if signal_ == "USR1" else []
    assert (tmp_path / "events").read_text().splitlines() == [*passed_on, "saved", "requeue 7"]


@pytest.mark.slow
@pytest.mark.parametrize(("option", "value"), [
    ("--name", "../x"), ("--name", "/abs"), ("--name", ""), ("--split", "../../train"), ("--split", "x\\y"),
])
def test_make_shards_refuses_names_that_leave_out(jpeg_folder, tmp_path, option, value):
    out = tmp_path / "space" / "out"
    name = ["--name", "tiny"] if option == "--split" else []
    command = [*MAKE_SHARDS, "folder", str(jpeg_folder / "val"), "--out", str(out), *name,
               "--split" if option == "--split" else "--name", value]
    if option == "--name":
        command += ["--split", "validation"]
    result = subprocess.run(command, cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)}, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    error = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(error) == 1 and f"argument {option}: " in error[0], result.stderr
    assert f"{value!r} is not valid" in error[0] and "letters, digits" in error[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "space").exists() and not (tmp_path / "x").exists()


def test_shard_writer_refuses_bad_names_before_writing(jpeg_folder, tmp_path):
    with pytest.raises(DataError, match=r"shard set name '\.\./x' is not valid"):
        write_folder_shards(jpeg_folder, tmp_path / "out", name="../x", progress=False)
    with pytest.raises(DataError, match=r"split name 'a/b' is not valid"):
        write_folder_shards(jpeg_folder / "val", tmp_path / "out", name="ok", split="a/b", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # not even the temporary folder is left


@pytest.mark.parametrize("filename", [
    "../../etc/hostname", "/etc/hostname", "sub/../../x.tar", "pipe:touch F", "http://example.org/x.tar",
    "a\\..\\..\\x.tar", "", 7,
])
def test_info_filenames_must_stay_inside_the_root(jpeg_folder, tmp_path, filename, monkeypatch):
    root = write_folder_shards(jpeg_folder, tmp_path / "shards", name="tiny", shard_size=4, progress=False)
    info = json.loads((root / "_info.json").read_text())
    info["splits"]["train"]["filenames"][1] = filename
    (root / "_info.json").write_text(json.dumps(info))
    monkeypatch.chdir(tmp_path)  # where a relative 'pipe:touch F' would create F
    for source in (root, str(root / "tiny-train-{0000..0005}.tar")):
        with pytest.raises(DataError, match=r"splits.train.filenames\[1\] = .* is not a file inside the shard "
                                            r"directory"):
            read_dataset_info(source)
    assert not (tmp_path / "F").exists()


def test_published_shard_folders_are_readable(jpeg_folder, tmp_path):
    old = os.umask(0o022)
    try:
        root = write_folder_shards(jpeg_folder, tmp_path / "shards", name="tiny", shard_size=4, progress=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE(root.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in root.iterdir()} == {0o644}
