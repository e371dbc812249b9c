"""The identity of a run's data, recorded in its checkpoints so that a resume on other data is noticed.

Per split (``train``, ``val``, ``test``): the sample count, each shard file's name and size in bytes (local
files; a URL's size is not asked for), the sha256 of each local shard when ``content`` is asked for
(``data.strict``: reads every byte, seconds per GB), and a hash of what the data set's ``_info.json`` says
of the split (name, counts, classes, statistics). Everything but the content hashes comes from one
``stat`` per shard: cheap for ImageNet's thousands of shards.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict

from ..atomic import file_hash
from .sources import DatasetInfo, is_remote, shard_name


def split_identity(info: DatasetInfo, content: bool) -> dict:
    files = {}
    for url in info.urls:
        entry = {}
        if not is_remote(url):
            entry["bytes"] = os.stat(url).st_size
            if content:
                entry["sha256"] = file_hash(url)
        files[shard_name(url)] = entry
    described = {k: v for k, v in asdict(info).items() if k != "urls"}
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()
    return {"samples": info.num_samples, "files": files, "info": f"sha256:{digest}"}


def data_identity(splits: dict[str, DatasetInfo], content: bool = False) -> dict[str, dict]:
    """The identity of each split of ``splits`` (vitwarm.data.read_splits), by role."""
    return {role: split_identity(info, content) for role, info in splits.items()}


def data_changes(old: dict[str, dict], new: dict[str, dict]) -> list[str]:
    """One phrase per split whose identity differs between ``old`` and ``new``, saying what changed."""
    phrases = []
    for role in sorted(old.keys() | new.keys()):
        before, after = old.get(role), new.get(role)
        if before == after:
            continue
        if before is None or after is None:
            phrases.append(f"{role}: {'not there before' if before is None else 'gone'}")
            continue
        parts = []
        if before["samples"] != after["samples"]:
            parts.append(f"{before['samples']} -> {after['samples']} samples")
        gone, added = (sorted(a.keys() - b.keys()) for a, b in ((before["files"], after["files"]),
                                                               (after["files"], before["files"])))
        if gone or added:
            example = f"{gone[0]} gone" if gone else f"{added[0]} new"
            parts.append(f"{len(before['files'])} -> {len(after['files'])} shard files ({example})")
        other = sorted(name for name in before["files"].keys() & after["files"].keys()
                       if before["files"][name] != after["files"][name])
        if other:
            parts.append(f"{len(other)} shard file(s) of other size or content, e.g. {other[0]}")
        if not parts:  # the same files, described otherwise (classes, statistics, shard lengths)
            parts.append("its description in _info.json")
        phrases.append(f"{role}: {', '.join(parts)}")
    return phrases
