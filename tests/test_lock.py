"""One writer per run directory: the lock itself (vitwarm.run.lock), in this process. A second ``flock`` of the
same file through another open file is refused even within one process, as it is across processes;
tests/test_preemption.py refuses a second real launch."""

from __future__ import annotations

import os
import re

import pytest

from vitwarm.errors import ConfigError
from vitwarm.run.lock import RunDirInUse, lock_holder, lock_run_dir


def test_a_held_directory_is_refused_naming_the_holder_and_free_again_once_released(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    held = lock_run_dir(tmp_path)
    holder = (tmp_path / ".lock").read_text()
    assert holder.startswith("host ") and f", pid {os.getpid()}, since " in holder
    with pytest.raises(RunDirInUse, match=f"run directory {tmp_path} is in use by another launch "
                                          rf"\(host .*, pid {os.getpid()}, since \d{{4}}-"):
        lock_run_dir(tmp_path)
    assert (tmp_path / ".lock").read_text() == holder  # the refused launch changed nothing
    held.release()
    assert (tmp_path / ".lock").read_text() == "" and (tmp_path / "metrics.jsonl").exists()
    lock_run_dir(tmp_path).release()


def test_a_directory_the_lock_created_and_nothing_filled_is_removed_on_release(tmp_path):
    lock = lock_run_dir(tmp_path / "new")
    lock.release()
    assert not (tmp_path / "new").exists()
    lock = lock_run_dir(tmp_path / "used")
    (tmp_path / "used" / "config.yaml").write_text("seed: 0\n")
    lock.release()
    assert sorted(p.name for p in (tmp_path / "used").iterdir()) == [".lock", "config.yaml"]


def test_a_forked_child_does_not_keep_the_lock(tmp_path):
    lock = lock_run_dir(tmp_path)
    read_end, write_end = os.pipe()
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child (a DataLoader worker, say) lives on until the parent has re-locked
        os.close(write_end)
        os.write(ready_write, b"r")  # running: the fork hooks have run
        os.read(read_end, 1)
        os._exit(0 if lock.fd == -1 else 1)
    os.close(read_end)
    assert os.read(ready_read, 1) == b"r"
    lock.release()
    lock_run_dir(tmp_path).release()  # free although the child still runs
    os.close(write_end)
    assert os.waitpid(pid, 0)[1] == 0


@pytest.mark.parametrize("planted", ["link to a file", "link to nothing", "folder", "named pipe"])
def test_a_lock_file_that_is_not_a_regular_file_is_refused_and_nothing_is_written_through_it(tmp_path, planted):
    run_dir, target = tmp_path / "run", tmp_path / "users_file"
    run_dir.mkdir()
    target.write_text("the user's own text\n")
    path = run_dir / ".lock"
    if planted == "link to a file":
        path.symlink_to(target)
    elif planted == "link to nothing":
        path.symlink_to(tmp_path / "absent")
    elif planted == "folder":
        path.mkdir()
    else:
        os.mkfifo(path)
    expected = {"folder": "a folder", "named pipe": "a named pipe"}.get(planted, "a symbolic link (to ")
    with pytest.raises(ConfigError, match=f"{path} is {re.escape(expected)}.*not the run's lock file"):
        lock_run_dir(run_dir)
    assert target.read_text() == "the user's own text\n"
    assert not (tmp_path / "absent").exists()


def test_a_sweep_launcher_sees_who_holds_a_run(tmp_path):
    assert lock_holder(tmp_path / "absent") is None and lock_holder(tmp_path) is None
    held = lock_run_dir(tmp_path)
    assert lock_holder(tmp_path) == (tmp_path / ".lock").read_text().strip()
    held.release()
    assert lock_holder(tmp_path) is None
    lock_run_dir(tmp_path).release()  # the looks left nothing held
