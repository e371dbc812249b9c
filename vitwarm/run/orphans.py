"""Workers never outlive their launcher.

Torch's elastic launcher (``accelerate launch``, ``torchrun``) starts each worker in a session of its own, so
a SIGKILL of the launcher's process group (``kill -- -PGID``, some schedulers and CI runners) reaches the
launcher only: its workers would go on training with parent 1, beside a re-launch into the same directory.
A worker started by the launcher therefore dies as soon as its parent is gone, in two ways:

- on Linux, ``prctl(PR_SET_PDEATHSIG, SIGKILL)``: the kernel kills it when the parent dies;
- everywhere, a daemon thread that compares ``os.getppid()`` with the parent seen at start once a second
  (it also covers a parent that died before the prctl call).

SIGKILL, not the polite stop (vitwarm.run.preemption): a worker without a launcher has nobody to report to and
its peers die alike; every file of the run directory is written atomically, so nothing is left half-written,
and the kernel releases the run directory's lock (vitwarm.run.lock) for the re-launch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # linux/prctl.h
CHECK_EVERY_S = 1.0


def launched_by_elastic() -> bool:
    """Whether torch's elastic launcher started this process (it sets TORCHELASTIC_RUN_ID in every worker)."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _watch(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            _die()
        time.sleep(CHECK_EVERY_S)


def exit_with_parent() -> None:
    """Under torch's elastic launcher, make this process die when its parent does (see the module docstring)."""
    if not launched_by_elastic():
        return
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the launcher died before the prctl call
        _die()
    threading.Thread(target=_watch, args=(parent,), name="vitwarm-exit-with-parent", daemon=True).start()
