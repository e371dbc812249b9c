"""Where shards live, and the checked ``_info.json`` that lists them.

A location is a local path or a URL that webdataset's ``gopen`` opens: ``http://`` / ``https://`` (through
curl), ``gs://`` (gsutil), ``ais://``, ``hf://``, ``sftp``/``ftps``/``scp``, ``file://``, or ``pipe:COMMAND``
(the command's standard output, the way to read any object store, e.g. ``pipe:aws s3 cp s3://b/x.tar -``).

Names that become paths are checked here: a shard set's name and split names (no path separators, no
``..``), and every filename in an ``_info.json`` (relative, inside its root, no URL scheme), so neither a
command line nor a downloaded ``_info.json`` can make vitwarm write or read outside the shard directory.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from pathlib import Path, PurePosixPath
from typing import IO
from urllib.parse import urlparse

from webdataset.gopen import gopen, gopen_schemes

from ..errors import VitwarmError

INFO_NAME = "_info.json"
# URL schemes webdataset can open (its dispatch table, minus the fallback entry); file:// is handled by gopen.
SCHEMES = tuple(sorted({s for s in gopen_schemes if s != "__default__"} | {"file"}))
# A shard set or split name: it becomes part of file names, so only these characters and no "..".
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class DataError(VitwarmError, ValueError):
    """A data source, ``_info.json``, shard or sample that cannot be used; the message names it.

    Also a ValueError, which is what the data functions raised for bad input before this class existed.
    """


def is_remote(location: str) -> bool:
    """True for a URL (any scheme, including unknown ones such as ``s3://``), False for a local path."""
    return bool(urlparse(str(location)).scheme)


def check_location(location: str) -> str:
    """``location`` itself when vitwarm can open it; DataError naming the scheme and the valid ones otherwise."""
    scheme = urlparse(location).scheme
    if scheme and scheme not in SCHEMES:
        raise DataError(f"cannot open {location!r}: webdataset has no opener for {scheme}:// URLs; use a local "
                        f"path, a URL of scheme {', '.join(SCHEMES)}, or a command such as "
                        f"'pipe:aws s3 cp {scheme}://bucket/shard.tar -'")
    return location


def join(root: str, name: str) -> str:
    """``name`` inside the directory ``root`` (a local path or a URL)."""
    if urlparse(root).scheme == "pipe":
        raise DataError(f"{root!r} is a command, not a directory: give pipe: sources as shard patterns, e.g. "
                        "'pipe:curl -s https://host/name-train-{0000..0099}.tar|N' (N = number of samples)")
    return f"{root.rstrip('/')}/{name}" if is_remote(root) else os.path.join(root, name)


def parent(location: str) -> str:
    """The directory holding ``location`` (a local path or a URL)."""
    return posixpath.dirname(location.rstrip("/")) if is_remote(location) else str(Path(location).parent)


def shard_name(location: str) -> str:
    """The file name of a shard location; for a ``pipe:`` command, that of its last word ending in ``.tar``
    (``pipe:aws s3 cp s3://b/x-0001.tar -`` -> ``x-0001.tar``), so _info.json entries can be matched to it."""
    if urlparse(location).scheme == "pipe":
        words = [w.strip("'\"") for w in location[len("pipe:"):].split()]
        tars = [w for w in words if w.endswith(".tar")]
        return posixpath.basename(tars[-1]) if tars else location
    return posixpath.basename(location)


def open_location(location: str) -> IO[bytes]:
    """A binary stream of ``location`` through webdataset's openers (a local file or a URL)."""
    return gopen(check_location(location), "rb")


def check_name(value: str, what: str = "name") -> str:
    """``value`` when it is usable as part of a shard file name; DataError otherwise."""
    if not NAME_PATTERN.fullmatch(value) or ".." in value:
        raise DataError(f"{what} {value!r} is not valid: use letters, digits, '_', '-' and '.' (not '..'), "
                        "starting with a letter or digit, e.g. 'imagenet1k' or 'validation'")
    return value


def _check_filename(name: object, where: str) -> None:
    parts = PurePosixPath(name).parts if isinstance(name, str) else ()
    if not parts or parts[0] == "/" or ".." in parts or "\\" in name or urlparse(name).scheme:
        raise DataError(f"{where} = {name!r} is not a file inside the shard directory: filenames must be "
                        "relative paths below it (no leading '/', no '..', no URL scheme)")


def check_info(meta: object, path: str) -> dict:
    """``meta`` (a parsed ``_info.json``) when it has the fields vitwarm reads; DataError naming the bad one."""

    def fail(key: str, want: str) -> DataError:
        return DataError(f"{path}: {key} must be {want}")

    if not isinstance(meta, dict):
        raise fail("the top level", "a JSON object with 'splits'")
    splits = meta.get("splits")
    if not isinstance(splits, dict) or not splits:
        raise fail("'splits'", "an object of at least one split, {name: {num_samples, filenames, shard_lengths}}")
    num_classes = meta.get("num_classes")
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise fail("'num_classes'", f"a positive integer, not {num_classes!r}")
    for split, s in splits.items():
        key = f"splits.{split}"
        if not isinstance(s, dict):
            raise fail(key, "an object with num_samples, filenames and shard_lengths")
        names, lengths, total = s.get("filenames"), s.get("shard_lengths"), s.get("num_samples")
        if not isinstance(names, list) or not names:
            raise fail(f"{key}.filenames", "a non-empty list of shard file names")
        for i, name in enumerate(names):
            _check_filename(name, f"{path}: {key}.filenames[{i}]")
        if (not isinstance(lengths, list) or len(lengths) != len(names)
                or not all(isinstance(n, int) and n >= 0 for n in lengths)):
            raise fail(f"{key}.shard_lengths", f"a list of {len(names)} sample counts >= 0 (one per filename)")
        if not isinstance(total, int) or total < 0:
            raise fail(f"{key}.num_samples", f"an integer >= 0, not {total!r}")
    return meta


def read_info(root: str | os.PathLike) -> dict:
    """Load and check ``<root>/_info.json`` (``root`` a directory or URL), or ``root`` itself when it ends in
    ``_info.json`` or is a ``pipe:`` command printing one.

    FileNotFoundError when the file is missing or cannot be fetched; DataError naming the file when it is not
    JSON or lacks what vitwarm reads (see ``check_info``).
    """
    root = str(root)
    path = root if root.endswith(INFO_NAME) or urlparse(root).scheme == "pipe" else join(root, INFO_NAME)
    if not is_remote(path) and not Path(path).is_file():
        raise FileNotFoundError(f"no {INFO_NAME} in {parent(path)}: not a shard directory written by make_shards")
    try:
        with open_location(path) as f:
            text = f.read()
    except OSError as e:  # a URL that could not be fetched is as missing as a local file
        raise FileNotFoundError(f"cannot read {path!r} ({e})") from None
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not valid JSON ({e}); rewrite it with make_shards.py") from None
    return check_info(meta, path)
