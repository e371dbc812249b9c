"""The one error path of every vitwarm command: an anticipated failure is one line, a bug keeps its traceback.

``VitwarmError`` is the base of every error vitwarm raises on purpose (bad config, bad data, bad checkpoint);
its message names the key, file, shard or sample and what would be valid. ``one_line_errors`` wraps a
command's ``main(argv)``: anticipated failures become exactly one line ``vitwarm: error: ...`` on stderr and
exit status 1; ``ArgumentParser`` does the same for usage errors (usage, then the line, exit status 2).
Anything else is a bug: its traceback is printed, then one line saying so.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
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


# Failures of the user's input rather than of vitwarm: ValueError is what vitwarm's and its libraries'
# argument checks raise (the project's contract: "bad arguments raise ValueError naming the argument"),
# OSError carries the file name, the others are malformed YAML and malformed safetensors files.
ANTICIPATED = (VitwarmError, ValueError, OSError, yaml.YAMLError, OmegaConfBaseException, SafetensorError)


def one_line(err: BaseException) -> str:
    """The error as one line: its message lines joined with '; ' (OSError: with the file it names)."""
    if isinstance(err, OSError) and err.filename is not None:
        text = f"{err.filename}: {err.strerror or err}"
    else:
        text = str(err) or type(err).__name__
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def one_line_errors(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a command's ``main``; the wrapper returns its exit status (0, or 1 after an error line)."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs) or 0
        except ANTICIPATED as err:
            rank = int(os.environ.get("RANK", "0"))  # set by accelerate launch / torchrun
            if rank == 0:
                print(f"vitwarm: error: {one_line(err)}", file=sys.stderr)
            elif not isinstance(err, ConfigError):  # what only this process hit: say which one
                print(f"vitwarm: error: process {rank}: {one_line(err)}", file=sys.stderr)
            return 1
        except Exception as err:  # noqa: BLE001 (a bug: keep the traceback, then say what it is)
            traceback.print_exc()
            print(f"vitwarm: error: internal error (a bug in vitwarm, please report it with the traceback "
                  f"above): {type(err).__name__}: {one_line(err)}", file=sys.stderr)
            return 1

    return wrapper


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's error line: the usage, then ``vitwarm: error: ...``, exit status 2."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(2, f"vitwarm: error: {one_line(ValueError(message))}\n")
