"""Where a run's numbers came from: the package source (a commit, or the installed version) and the machine.

Two runs are comparable only when both are known to have run the same code on the same machine: the same run
moves by tenths of a point on another CPU or kernel path (docs/comparisons.md), and a commit can change
numbers while the version string stays the same. summary.json's ``environment`` carries both
(vitwarm.run.rundir.environment); the analysis flags a pair whose two runs differ in either, and a run that
records neither counts as unknown, never as matching (vitwarm.analysis.paired).

A leaf module: it imports nothing of vitwarm but the version.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import socket
import subprocess
from pathlib import Path

from . import __version__

PACKAGE_DIR = Path(__file__).resolve().parent


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(PACKAGE_DIR), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):  # no git on the machine
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.cache
def source() -> dict:
    """``{"version", "commit", "modified"}``. ``commit`` is the HEAD of the git checkout the package is imported
    from and ``modified`` whether its tracked files differ from that commit (untracked files, such as run
    directories, are not looked at); both are None for an installed package (a wheel): its version is all
    there is."""
    found = {"version": __version__, "commit": None, "modified": None}
    top = _git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != PACKAGE_DIR.parent:  # installed, or inside someone else's checkout
        return found
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    if commit is None or status is None:
        return found
    return found | {"commit": commit, "modified": bool(status)}


def _cpu_model() -> str:
    with contextlib.suppress(OSError, StopIteration):  # Linux names the model here, not in processor()
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    return platform.processor()


def _memory_bytes() -> int | None:
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return None


def _host_identity() -> str:
    # /etc/machine-id is stable across reboots and unique per installation; the host name stands in without it.
    with contextlib.suppress(OSError):
        return Path("/etc/machine-id").read_text().strip() or socket.gethostname()
    return socket.gethostname()


@functools.cache
def machine(cpu_level: str) -> dict:
    """``{"fingerprint", "cpu", "cpu_level", "memory_bytes"}``: the fingerprint is the first 16 hex digits of
    the sha256 of the host's identity, the CPU model string, its instruction-set level (``cpu_level``, torch's
    kernel path, e.g. AVX2) and the memory size, so that it names the machine without revealing its name."""
    cpu, memory = _cpu_model(), _memory_bytes()
    text = "\n".join([_host_identity(), cpu, cpu_level, str(memory)])
    return {"fingerprint": hashlib.sha256(text.encode()).hexdigest()[:16], "cpu": cpu, "cpu_level": cpu_level,
            "memory_bytes": memory}
