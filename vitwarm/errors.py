"""The one error path of every vitwarm command: an anticipated failure is one line, a bug keeps its traceback.

``VitwarmError`` is the base of every error vitwarm raises on purpose (bad config, bad data, bad checkpoint);
its message names the key, file, shard or sample and what would be valid. ``one_line_errors`` wraps a
command's ``main(argv)``: anticipated failures become exactly one line ``vitwarm: error: ...`` on stderr and
exit status 1; ``ArgumentParser`` does the same for usage errors (usage, then the line, exit status 2).
A run stopped on request (``Stopped``) says how to resume and exits with ``STOPPED`` (75); one stopped at
once by Ctrl-C (KeyboardInterrupt) says so in one line and exits with ``INTERRUPTED`` (130). A process whose
peer died mid-collective (``peer_lost``) says so in one line and exits 1: the peer reports the cause.
Anything else is a bug: its traceback is printed, then one line saying so.

Under torch's elastic launcher (``accelerate launch``, ``torchrun``) the launcher itself prints a
ChildFailedError report, with its own traceback, whenever a process exits non-zero; vitwarm cannot prevent
that (docs/training.md). Each failing process hands the launcher its line through the error file the
launcher gave it, so the report's root cause is that line instead of a link.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable

import yaml
from omegaconf.errors import OmegaConfBaseException
from safetensors import SafetensorError


class VitwarmError(Exception):
    """An anticipated failure; the message names what is wrong and what would be valid."""


class ConfigError(VitwarmError, ValueError):
    """A config that cannot run: the message names the key and what would be valid.

    Config checks give the same answer in every process, so only the first process reports them.
    """


STOPPED = 75
"""Exit status of a run stopped on its stop signal after saving: "stopped, resumable" (EX_TEMPFAIL of sysexits.h)."""


INTERRUPTED = 130
"""Exit status of a command stopped at once by Ctrl-C (128 + SIGINT, as a shell reports it)."""
INTERRUPTED_LINE = ("interrupted by Ctrl-C; stopped at once: a save under way was discarded, the newest complete "
                    "checkpoint stays; run the same command to resume from it")


class Stopped(Exception):
    """The run saved a checkpoint and stopped on request; the message says where and how to resume."""


# What a process's collectives raise when a peer process is gone (gloo's TCP transport, NCCL's abort): the
# peer's own failure is the cause, and the peer reports it.
PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator was aborted")


def peer_lost(err: BaseException) -> bool:
    """Whether ``err`` is a collective failing because another process of the launch died."""
    return (int(os.environ.get("WORLD_SIZE", "1")) > 1 and isinstance(err, (RuntimeError, OSError))
            and any(text in str(err) for text in PEER_LOST))


# Failures of the user's input rather than of vitwarm: ValueError is what vitwarm's and its libraries'
# argument checks raise (the project's contract: "bad arguments raise ValueError naming the argument"),
# OSError carries the file name, the others are malformed YAML and malformed safetensors files.
ANTICIPATED = (VitwarmError, ValueError, OSError, yaml.YAMLError, OmegaConfBaseException, SafetensorError)


# Errors of a file system that cannot take a write: full or over quota.
NO_ROOM = (errno.ENOSPC, errno.EDQUOT)


def free_bytes(path: str) -> int | None:
    """Bytes free for writing on the file system where ``path`` is (or would be); None when unknown."""
    folder = os.path.abspath(path)
    while not os.path.isdir(folder) and folder != os.path.dirname(folder):
        folder = os.path.dirname(folder)
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def free_space(path: str) -> str:
    """The space free for writing where ``path`` is, e.g. '1.3 MB free on its file system'."""
    free = free_bytes(path)
    return "free space unknown" if free is None else f"{free / 1e6:.1f} MB free on its file system"


def one_line(err: BaseException) -> str:
    """The error as one line: its message lines joined with '; ' (OSError: with the file it names; a full or
    over-quota file system: with the space left there and what to do)."""
    if isinstance(err, OSError) and err.filename is not None:
        text = f"{err.filename}: {err.strerror or err}"
        if err.errno in NO_ROOM:
            text += (f" ({free_space(err.filename)}); nothing half-written is kept: make room (or choose another "
                     "location) and run the same command again (a run resumes from its newest checkpoint)")
        elif err.errno == errno.EROFS:
            text += "; choose a writable location"
    else:
        text = str(err) or type(err).__name__
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def tell_launcher(line: str, after: int = 0) -> None:
    """Write ``line`` to the error file of torch's elastic launcher (``TORCHELASTIC_ERROR_FILE``), if any.

    The format is the one torch.distributed.elastic's ``ProcessFailure`` reads: a JSON object with the
    message as a string and the time in seconds. The launcher names the earliest failure its root cause,
    in whole seconds; ``after`` seconds are added to the time of a failure that follows another one (a
    peer's), so that the peer's stays first. The line is on stderr already: a file that cannot be
    written only costs the launcher's report its root cause.
    """
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        with contextlib.suppress(OSError), open(path, "w") as f:
            json.dump({"message": line, "timestamp": int(time.time()) + after}, f)


def one_line_errors(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a command's ``main``; the wrapper returns its exit status (0, or 1 after an error line)."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        rank = int(os.environ.get("RANK", "0"))  # set by accelerate launch / torchrun
        try:
            return main(*args, **kwargs) or 0
        except Stopped as stop:
            tell_launcher(one_line(stop))
            if rank == 0:
                print(f"vitwarm: {one_line(stop)}", file=sys.stderr)
            return STOPPED
        except KeyboardInterrupt:  # Ctrl-C before the run holds its directory, or a second one (vitwarm.run.preemption)
            line = INTERRUPTED_LINE
            tell_launcher(line)
            if rank == 0:
                print(f"vitwarm: {line}", file=sys.stderr)
            return INTERRUPTED
        except Exception as err:  # noqa: BLE001 (sorted below; a bug keeps its traceback)
            if peer_lost(err):
                line = f"rank {rank} stopping: a peer process failed (see its message)"
                tell_launcher(line, after=1)
                print(f"vitwarm: {line}", file=sys.stderr)
                return 1
            if isinstance(err, ANTICIPATED):
                line = one_line(err) if rank == 0 else f"process {rank}: {one_line(err)}"
                tell_launcher(line)
                # A config error is the same in every process: the first one says it for all.
                if rank == 0 or not isinstance(err, ConfigError):
                    print(f"vitwarm: error: {line}", file=sys.stderr)
                return 1
            traceback.print_exc()
            line = (f"internal error (a bug in vitwarm, please report it with the traceback above): "
                    f"{type(err).__name__}: {one_line(err)}")
            tell_launcher(line)
            print(f"vitwarm: error: {line}", file=sys.stderr)
            return 1

    return wrapper


def command_name(module_form: str) -> str:
    """How the user called the command, for its usage line: a console script (``vitwarm-train``) or a verb of
    the ``vitwarm`` command (``vitwarm train``, ``python -m vitwarm train``) by its name, anything else as
    ``module_form`` (``python -m vitwarm.train``)."""
    called = os.path.basename(sys.argv[0])
    return called if called.startswith(("vitwarm-", "vitwarm ", "python -m vitwarm ")) else module_form


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's error line: the usage, then ``vitwarm: error: ...``, exit status 2."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(2, f"vitwarm: error: {one_line(ValueError(message))}\n")
