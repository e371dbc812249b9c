"""Files written so that a kill at any moment leaves the old copy or the new one, and content hashes.

This is a leaf module: it imports nothing else of vitwarm, so the run directory (vitwarm.run), the hub
exports (vitwarm.models.hub) and the checkpoints can all use it without importing each other.

Every file goes through ``atomic_write``: a temporary file in the same folder, flushed and fsynced, renamed
over the old one, then the folder fsynced. ``fault_point`` names the dangerous moments so that tests can
kill a real process exactly there (``VITWARM_KILL_AT=name`` or ``name@N`` for its N-th passage).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import struct
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

FAULT_ENV = "VITWARM_KILL_AT"
# Seconds between reaching the point and the kill, while the process's other threads run on (a background
# checkpoint write killed after training has moved past its step).
FAULT_DELAY_ENV = "VITWARM_KILL_DELAY"
_passages: Counter[str] = Counter()


def fault_point(name: str) -> None:
    """Test hook: SIGKILL this process when ``VITWARM_KILL_AT`` names this point (``name`` or ``name@N``),
    ``VITWARM_KILL_DELAY`` seconds (default 0) after it is reached."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    target, _, nth = spec.partition("@")
    if target == name:
        _passages[name] += 1
        if _passages[name] == int(nth or 1):
            time.sleep(float(os.environ.get(FAULT_DELAY_ENV, "0")))
            os.kill(os.getpid(), signal.SIGKILL)


def fsync_dir(path: str | Path) -> None:
    """Make a rename or a new file inside ``path`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` for a temporary file beside ``path``, make it durable, rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    write(tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    fault_point(f"write:{path.name}")  # the new copy is complete beside the old one
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def safetensors_bytes(tensors: dict, metadata: dict[str, str] | None = None) -> bytes:
    """A safetensors file whose bytes depend only on its content.

    safetensors writes the ``__metadata__`` entries in hash-map order, which changes from process to
    process; the header is re-encoded with sorted metadata (same length, so the padding is unchanged).
    """
    from safetensors.torch import save  # here: importing safetensors.torch imports torch

    data = save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, metadata=metadata)
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    return data[:8] + text.ljust(length) + data[8 + length:]


def write_safetensors(path: str | Path, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    content = safetensors_bytes(tensors, metadata)
    return atomic_write(path, lambda tmp: tmp.write_bytes(content))


def file_hash(path: str | Path) -> str:
    with open(path, "rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def check_hashes(folder: str | Path, hashes: dict[str, str]) -> str | None:
    """Why the files named in ``hashes`` (relative to ``folder``) are not what was written, or None."""
    if not hashes:
        return "no content hashes recorded"
    for name, expected in hashes.items():
        path = Path(folder) / name
        if not path.is_file():
            return f"{name} is missing"
        if file_hash(path) != expected:
            return f"{name} does not match its recorded hash (damaged or replaced)"
    return None
