"""One writer per run directory: the launch that trains into RUN_DIR holds an exclusive lock on RUN_DIR/.lock.

The lock is ``flock(2)`` on an open file: the kernel drops it when the holder's file is closed, so a holder
that dies (any signal, SIGKILL included) leaves no stale lock, and nothing ever has to be deleted by hand.
The file itself stays; after taking the lock the holder writes who it is (host, PID, start time), which a
refused launch quotes. Only the main process locks: the other processes of a launch write nothing the main
process does not coordinate. The file is opened without following a link (a shared folder lets others plant
one there), and anything but a regular file is refused; the other names of the directory are checked for
planted links right after locking (vitwarm.run.rundir.refuse_links).

Sweep launchers sharing a sweep look at a run's lock (``lock_holder``) before they start it, to leave a run
that another launcher's trainer holds to that launcher.

Where ``flock`` does not work (some NFS mounts without lock support answer ENOLCK; on others, and on Lustre
mounted without ``flock``, a lock may hold only on one node), ``run.lock=false`` turns the lock off: then
nothing stops a second launch from writing into the same directory (docs/training.md).
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import os
import socket
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from ..errors import ConfigError, one_line
from .rundir import LOCK, refuse_links


class RunDirInUse(ConfigError):
    """Another launch holds the run directory's lock."""


def _not_a_lock_file(path: Path, mode: int) -> ConfigError:
    """The refusal of a ``path`` that exists but is not a regular file (a planted link, a folder, a pipe)."""
    what = "a folder" if stat.S_ISDIR(mode) else "a named pipe" if stat.S_ISFIFO(mode) else "not a regular file"
    if stat.S_ISLNK(mode):
        what = f"a symbolic link (to {os.readlink(path)})"
    return ConfigError(f"{path} is {what}, not the run's lock file; vitwarm follows no link in a run directory: "
                       "remove it or choose another run.dir")


def open_lock_file(path: Path) -> int:
    """The lock file opened for writing without following a link (O_NOFOLLOW), created if missing; a
    ConfigError naming ``path`` and what is there when that is not a regular file."""
    try:
        # O_NONBLOCK: a planted named pipe must not block the open; it is refused below.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise _not_a_lock_file(path, os.lstat(path).st_mode) from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _not_a_lock_file(path, mode)
    return fd


class RunLock:
    """The held lock of one run directory; ``release()`` lets it go.

    Released, the lock file is empty again, and a directory this launch created and left holding nothing
    else is removed: a launch refused after locking (a config that does not fit the directory) changes
    nothing.
    """

    def __init__(self, path: Path, fd: int, created: bool):
        self.path, self.fd, self.created = path, fd, created
        # A forked child (a DataLoader worker) shares the locked file: it drops its copy, so that the lock
        # ends with this process and not with the last of its children. (The file is not inherited across
        # exec: os.open makes it close-on-exec.)
        os.register_at_fork(after_in_child=self.forget)

    def forget(self) -> None:
        """Close this process's copy of the file without unlocking (the lock belongs to the parent)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def release(self) -> None:
        if self.fd < 0:
            return
        os.ftruncate(self.fd, 0)
        if self.created and [p.name for p in self.path.parent.iterdir()] == [LOCK]:
            self.path.unlink()
            self.path.parent.rmdir()
        os.close(self.fd)  # closing the file releases the lock
        self.fd = -1


def holder_line() -> str:
    """Who holds a lock, as written into the lock file: host, PID and start time (UTC, ISO 8601)."""
    since = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return f"host {socket.gethostname()}, pid {os.getpid()}, since {since}"


def lock_run_dir(run_dir: str | Path) -> RunLock:
    """Take RUN_DIR's lock (creating RUN_DIR), or raise RunDirInUse naming the directory and the holder."""
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    probes = 0
    while True:
        fd = open_lock_file(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise OSError(err.errno, f"cannot lock the run directory ({err.strerror}); on a file system "
                                         "without working locks set run.lock=false", str(path)) from err
            # A sweep launcher's look (lock_holder) holds the lock for microseconds: try a few times before
            # refusing (a quarter of a second in all).
            if probes < 5:
                probes += 1
                time.sleep(0.05)
                continue
            holder = path.read_text().strip() or "a launch that is starting or stopping"
            raise RunDirInUse(f"run directory {run_dir} is in use by another launch ({holder}); wait for it to "
                              "end, stop it, or choose another run.dir") from None
        # A releasing holder may have removed the file between our open and our lock: lock the one in place.
        if path.exists() and os.stat(path).st_ino == os.fstat(fd).st_ino:
            break
        os.close(fd)
        run_dir.mkdir(parents=True, exist_ok=True)
    # Written only by the holder, after locking (a refused launch never changes the file); a holder killed
    # before its release left its own line.
    os.ftruncate(fd, 0)
    os.pwrite(fd, (holder_line() + "\n").encode(), 0)
    return RunLock(path, fd, created)


def lock_holder(run_dir: str | Path) -> str | None:
    """Who holds RUN_DIR's lock now (its holder line), or None when no launch holds it (or there is no lock
    file). For launchers that share a sweep: they look before they start a run and after one fails."""
    path = Path(run_dir) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # given up at once by the close below
    except BlockingIOError:
        return os.pread(fd, 4096, 0).decode(errors="replace").strip() or "a launch that is starting"
    except OSError:  # no working locks here (ENOLCK): nobody can be seen holding it
        return None
    finally:
        os.close(fd)
    return None


@contextmanager
def hold_run_dir(run_dir: str, enabled: bool, accelerator: Accelerator, more: tuple[str, ...] = ()) -> Iterator[None]:
    """RUN_DIR's lock for the whole launch (``enabled``: ``run.lock``), and none of its names (``more`` besides
    vitwarm.run.rundir's) a planted link. The main process takes the lock, looks, and tells the others
    whether it could, so that a refused launch stops in every process at once, in one line."""
    lock, refusal = None, None
    if accelerator.is_main_process:
        try:
            lock = lock_run_dir(run_dir) if enabled else None
            refuse_links(run_dir, more)
        except (ConfigError, OSError) as err:
            refusal = one_line(err)
            if lock:
                lock.release()
                lock = None
    [refusal] = broadcast_object_list([refusal])
    if refusal:
        raise RunDirInUse(refusal)
    try:
        yield
    finally:
        if lock:
            lock.release()
