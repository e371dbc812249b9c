"""Where shards live, and the checked ``_info.json`` that lists them.

A location is a local path or a URL that webdataset's ``gopen`` opens: ``http://`` / ``https://`` (through
curl), ``gs://`` (gsutil), ``ais://``, ``hf://``, ``sftp``/``ftps``/``scp``, ``file://``, or ``pipe:COMMAND``
(the command's standard output, the way to read any object store, e.g. ``pipe:aws s3 cp s3://b/x.tar -``).
Over HTTP(S) the ``_info.json`` is fetched (once per process) and the first shard asked for with urllib
(vitwarm.data.http_fetch), so that a wrong URL fails before the run naming the URL and the HTTP status.

Names that become paths are checked here: a shard set's name and split names (no path separators, no
``..``), and every filename in an ``_info.json`` (relative, inside its root, no URL scheme), so neither a
command line nor a downloaded ``_info.json`` can make vitwarm write or read outside the shard directory.

A split's source (``read_dataset_info``) is a shard directory holding ``_info.json`` (split chosen by name),
that file itself, or a brace pattern of shard files such as ``DIR/imagenet1k-train-{0000..1023}.tar``,
optionally followed by ``|N`` (the sample count); without ``|N`` the counts come from an ``_info.json``
beside the shards (or given as ``info``).
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import IO
from urllib.parse import urlparse

from webdataset.gopen import gopen, gopen_schemes
from webdataset.shardlists import expand_urls

from ..errors import VitwarmError
from .http_fetch import DEFAULT_HTTP, HTTP_SCHEMES, HttpLimits, http_check_there, http_get, open_http

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


def open_location(location: str, limits: HttpLimits = DEFAULT_HTTP) -> IO[bytes]:
    """A binary stream of ``location``: HTTP(S) with ``limits`` on stalls (vitwarm.data.http_fetch), anything
    else through webdataset's openers (a local file or a URL)."""
    if urlparse(location).scheme in HTTP_SCHEMES:
        return open_http(location, limits)
    return gopen(check_location(location), "rb")


@lru_cache(maxsize=64)
def _fetch(location: str) -> bytes:
    """The bytes at a remote ``location``, fetched once per process: the preflight, every split and every
    loader read the same ``_info.json``. A failure is not cached: FileNotFoundError naming the location."""
    if urlparse(location).scheme in HTTP_SCHEMES:
        return http_get(location)
    try:
        with open_location(location) as f:
            return f.read()
    except OSError as err:  # a URL that could not be fetched is as missing as a local file
        raise FileNotFoundError(f"cannot read {location!r} ({err})") from None


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
    if is_remote(path):
        text = _fetch(check_location(path))
    elif not Path(path).is_file():
        raise FileNotFoundError(f"no {INFO_NAME} in {parent(path)}: not a shard directory written by make_shards")
    else:
        text = Path(path).read_bytes()
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not valid JSON ({e}); rewrite it with make_shards.py") from None
    return check_info(meta, path)


@dataclass
class DatasetInfo:
    """What is known about one split: shard paths, sample counts, classes and normalisation statistics."""

    name: str
    split: str
    urls: list[str]
    num_samples: int
    shard_lengths: list[int] | None  # per shard, None when only a total (``|N``) is known
    num_classes: int | None = None
    classes: list[str] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


_check_there = lru_cache(maxsize=64)(http_check_there)  # asked once per process, like _fetch


def _check_files(urls: list[str], source: str) -> None:
    # Remote shards are not fetched twice: only the first shard of an HTTP source is asked for (a wrong
    # directory fails here, before step 1); another missing one shows when it is read (a fault).
    if urlparse(urls[0]).scheme in HTTP_SCHEMES:
        _check_there(urls[0])
    missing = [u for u in urls if not is_remote(u) and not Path(u).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(urls)} shard(s) of {source} are missing, e.g. {missing[0]}")


def split_count(source: str) -> tuple[str, int | None]:
    """``"PATTERN|N"`` -> ``(PATTERN, N)``; a source without a trailing ``|N`` -> ``(source, None)``.

    Only a trailing count of digits counts, so a ``pipe:`` command may contain shell pipes itself.
    """
    head, sep, tail = source.rpartition("|")
    return (head, int(tail)) if sep and tail.strip().isdigit() else (source, None)


def is_pattern(source: str) -> bool:
    """A brace pattern or list of shard files (``.tar``, optionally ``|N``), not a directory or _info.json."""
    pattern, n = split_count(source)
    return "{" in pattern or n is not None or pattern.endswith(".tar") or pattern.startswith("pipe:")


def _info_beside(root: str) -> dict:
    """The ``_info.json`` in the shards' directory, or {} when there is none (or, for pipe: sources, no directory)."""
    if urlparse(root).scheme == "pipe":
        return {}
    try:
        return read_info(root)
    except FileNotFoundError:
        return {}


def read_dataset_info(source: str | os.PathLike, split: str = "train", info: str | None = None) -> DatasetInfo:
    """Describe ``split`` of ``source``: a shard directory or its ``_info.json``, or a brace pattern of shards.

    Directories, ``_info.json`` files and shards may be local paths or URLs (see vitwarm.data.sources). A
    pattern takes its counts, classes and statistics from ``info`` (an ``_info.json`` location, for shards
    without one beside them such as ``pipe:`` commands), else from the ``_info.json`` beside its shards, if
    any; its shards must be those of ``split`` when that file lists them. Raises
    FileNotFoundError for a missing local directory, ``_info.json`` or shard file, and DataError for an unknown
    split, an empty pattern, a pattern without a known sample count, or counts that disagree.
    """
    source = str(source)
    if not source.strip():
        raise DataError("empty data source: give a shard directory or a pattern like DIR/name-train-{0000..0009}.tar")
    check_location(source)
    if not is_pattern(source):
        root = parent(source) if source.endswith(INFO_NAME) else source
        if not is_remote(root) and not Path(root).is_dir():
            raise FileNotFoundError(f"shard directory {root} does not exist")
        meta = read_info(source)
        if split not in meta["splits"]:
            raise DataError(f"split {split!r} is not in {join(root, INFO_NAME)}; valid: {sorted(meta['splits'])}")
        s = meta["splits"][split]
        urls, lengths, total = [join(root, f) for f in s["filenames"]], list(s["shard_lengths"]), s["num_samples"]
        _check_files(urls, source)
    else:
        pattern, n = split_count(source)
        urls = expand_urls(pattern) if pattern.strip() else []
        if not urls:
            raise DataError(f"shard pattern {source!r} expands to no files")
        _check_files(urls, source)
        root = parent(urls[0])
        meta = read_info(info) if info is not None else _info_beside(root)
        known = {f: (name, n_f) for name, s in meta.get("splits", {}).items()
                 for f, n_f in zip(s["filenames"], s["shard_lengths"])}
        names = [shard_name(u) for u in urls]
        if all(f in known for f in names):
            lengths = [known[f][1] for f in names]
            found = sorted({known[f][0] for f in names})
            if found != [split]:
                raise DataError(f"shard pattern {source!r} holds shards of split {' and '.join(found)} (says "
                                f"{info or join(root, INFO_NAME)}), not of split {split!r}")
        else:
            lengths = None
        total = n if n is not None else (sum(lengths) if lengths is not None else None)
        if total is None:
            raise DataError(f"shard pattern {source!r} needs a sample count: append '|N', or put an {INFO_NAME} "
                            f"listing these shards beside them or give its location (data.info)")
    if lengths is not None and sum(lengths) != total:
        raise DataError(f"{source}: shard lengths add up to {sum(lengths)} samples but the count given is {total}")
    return DatasetInfo(
        name=meta.get("name", posixpath.basename(root.rstrip("/"))), split=split, urls=urls,
        num_samples=int(total), shard_lengths=lengths, num_classes=meta.get("num_classes"),
        classes=meta.get("classes"), mean=tuple(meta["mean"]) if "mean" in meta else None,
        std=tuple(meta["std"]) if "std" in meta else None)
