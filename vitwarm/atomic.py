"""Files written so that a kill at any moment leaves the old copy or the new one, and content hashes.

This is a leaf module: it imports nothing else of vitwarm, so the run directory (vitwarm.run), the hub
exports (vitwarm.models.hub) and the checkpoints can all use it without importing each other.

Every file goes through ``atomic_write``: a temporary file of its writer's own in the same folder, flushed
and fsynced, renamed over the old one, then the folder fsynced; a write that fails removes its temporary
file and raises an OSError naming the file (``writing``: also for torch's and safetensors' own errors).
``fault_point`` names the dangerous moments so that tests can kill a real process exactly there
(``VITWARM_KILL_AT=name`` or ``name@N`` for its N-th passage), or send it other signals there.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import secrets
import signal
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

FAULT_ENV = "VITWARM_KILL_AT"
FAULT_SIGNALS_ENV = "VITWARM_FAULT_SIGNALS"
# Seconds between reaching the point and the kill, while the process's other threads run on (a background
# checkpoint write killed after training has moved past its step).
FAULT_DELAY_ENV = "VITWARM_KILL_DELAY"
_passages: Counter[str] = Counter()


def fault_point(name: str) -> None:
    """Test hook: SIGKILL this process when ``VITWARM_KILL_AT`` names this point (``name`` or ``name@N``),
    ``VITWARM_KILL_DELAY`` seconds (default 0) after it is reached; ``VITWARM_FAULT_SIGNALS`` sends other
    signals there instead, one after another (``SIGINT,SIGINT``: two Ctrl-C in the middle of a save)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    target, _, nth = spec.partition("@")
    if target == name:
        _passages[name] += 1
        if _passages[name] == int(nth or 1):
            time.sleep(float(os.environ.get(FAULT_DELAY_ENV, "0")))
            for signal_name in os.environ.get(FAULT_SIGNALS_ENV, "SIGKILL").split(","):
                os.kill(os.getpid(), signal.Signals[signal_name])
                # Python runs handlers in the main thread, and two signals that arrive before it does run one
                # handler: from a background write, give it the moment to take each one.
                if threading.current_thread() is not threading.main_thread():
                    time.sleep(0.5)


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


# A writer's temporary file: .tmp-NAME@HOST-PID-RANDOM. Two writers of one file (two sweep launchers, say)
# never share one, and a leftover names its writer, so that a later writer on the same host can tell a dead
# writer's leftover (removed) from a live one's (left alone).
_TMP = re.compile(r"^\.tmp-(?P<name>.+)@(?P<host>[^@]+)-(?P<pid>\d+)-[0-9a-f]{8}$")


def temporary_name(path: Path) -> Path:
    """A temporary file beside ``path`` that only this process writes (host, PID and a random suffix)."""
    return path.with_name(f".tmp-{path.name}@{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        pass
    return True


def remove_dead_writers_leftovers(path: Path) -> None:
    """Remove the temporary files of ``path`` left by writers of this host that died mid-write (a SIGKILL)."""
    host = socket.gethostname()
    for leftover in path.parent.glob(f".tmp-{glob.escape(path.name)}@*"):
        match = _TMP.match(leftover.name)
        if match and match["name"] == path.name and match["host"] == host and not _alive(int(match["pid"])):
            leftover.unlink(missing_ok=True)


def named_os_error(err: BaseException, path: str | Path) -> OSError | None:
    """``err``, the failure of a write to ``path``, as an OSError that names a file: an OSError without a file
    name gets ``path``, and so does a library's error that wraps an OS error (safetensors: "... (os error
    28)"); None when ``err`` is no OS error."""
    if isinstance(err, OSError):
        return err if err.filename is not None else OSError(err.errno, err.strerror, str(path))
    wrapped = re.search(r"\(os error (\d+)\)", str(err))
    if wrapped:
        number = int(wrapped[1])
        return OSError(number, os.strerror(number), str(path))
    return None


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Any OS error of what the block writes raised as an OSError naming ``path`` (see named_os_error), so
    that a full disk is one line naming the file (vitwarm.errors.one_line adds the free space)."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 (re-raised, as itself unless it wraps an OS error)
        named = named_os_error(err, path)
        if named is None or named is err:
            raise
        raise named from err


def save_torch(obj, path: str | Path) -> None:
    """``torch.save`` through a Python file: a failed write raises its OSError (a full disk: ENOSPC), where
    torch's own file writer raises a RuntimeError that names neither ("unexpected pos")."""
    import torch  # here: a leaf module that imports torch only where it is needed

    with open(path, "wb") as f:
        try:
            torch.save(obj, f)
        except RuntimeError as err:
            # A write that fails inside torch's zip writer (ENOSPC) is replaced by the writer's own error on its
            # way out ("unexpected pos"): the OS error it handled is the one to raise.
            if isinstance(err.__context__, OSError):
                raise err.__context__ from None
            raise


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` for a temporary file beside ``path``, make it durable, rename it into place.

    A write that fails (a full disk, say) or is interrupted (a second Ctrl-C) removes its temporary file
    and leaves the old ``path`` as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_writers_leftovers(path)
    tmp = temporary_name(path)
    try:
        with writing(path):
            write(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            fault_point(f"write:{path.name}")  # the new copy is complete beside the old one
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
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
